"""AWS through boto3: clients and errors (session), RDS/Aurora failover, Route 53 zones."""

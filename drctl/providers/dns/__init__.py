"""DNS step types: Route 53 (boto3) and RFC 2136 dynamic updates (dnspython)."""

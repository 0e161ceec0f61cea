"""A local, real failover playground: a PostgreSQL primary and streaming standby on loopback."""

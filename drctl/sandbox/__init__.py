"""A local, real failover playground: a PostgreSQL primary and streaming standbys on loopback."""

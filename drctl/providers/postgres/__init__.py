"""PostgreSQL step types (psycopg 3): lag, fence, promote, write probe, rejoin, SQL checks."""

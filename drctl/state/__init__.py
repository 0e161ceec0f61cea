"""Where runs, their journals and their locks are kept: SQLite by default."""

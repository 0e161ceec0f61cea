"""Patroni: step types that coordinate with the HA manager instead of fighting it."""

"""Runbook files: YAML with positions, the typed model, secret references."""

"""Turning plans, diffs and diagnostics into text, markdown and JSON (byte-stable)."""

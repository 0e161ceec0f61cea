"""Executing plans: journal, resume, run lock, approvals, output sinks."""

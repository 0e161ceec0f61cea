"""Step types per system. Each provider imports its client library lazily, inside the
functions that talk to the system, so compiling a runbook never loads it."""

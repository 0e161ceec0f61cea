"""Drills: run a runbook with a canary writer and measure RTO/RPO against its objectives."""

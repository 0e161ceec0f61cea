"""Runbook → Plan: params, templating, fan-out, dependency graph, safety lints."""

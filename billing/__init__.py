"""Billing rules for assisted migration and the SLA support calendar (pure, no I/O)."""

"""Deployments: wire the flows to a Prefect server so operators run them from the UI."""

"""Flows: the only place where sources, exporters and storage meet; Prefect orchestration."""

"""CLI commands, one module per area; each registers on :data:`tenant_export.cliapp.app`."""

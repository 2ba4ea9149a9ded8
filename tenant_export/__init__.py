"""Tenant data-export and offboarding pipeline: shared kernel (errors, ids, settings), CLI."""

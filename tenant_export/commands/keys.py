"""CLI commands: backup key management (filled in by its issue)."""

from __future__ import annotations

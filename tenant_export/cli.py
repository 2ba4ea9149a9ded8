"""``tenant-export``: the command line of DESIGN §3.1 (commands live in ``commands/``)."""

from __future__ import annotations

import sys

import typer

from kernel.errors import BadInput
from kernel.lean import lean_process
from tenant_export.cliapp import app
from tenant_export.commands import (
    backups,
    catalog,
    exports,
    keys,
    lifecycle,
    migration,
    offboarding,
    ops,
    portal,
)

__all__ = ["app", "backups", "catalog", "exports", "keys", "lifecycle", "main", "migration",
           "offboarding", "ops", "portal"]


def main() -> None:
    """Console-script entry point."""
    lean_process()  # no pandas, Arrow's system pool (kernel/lean.py says why)
    try:
        app()
    except BadInput as err:  # raised by option callbacks before a command body runs
        typer.echo(f"tenant-export: error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

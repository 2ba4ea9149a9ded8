"""``tenant-export``: the command line of DESIGN §3.1 (commands live in ``commands/``)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import typer

from kernel.errors import BadInput
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


class _NoPandas(importlib.abc.MetaPathFinder):
    """pyarrow imports pandas the first time it converts a Python sequence, only to ask
    whether the values are pandas objects: about 55 MiB of memory and half a second of CPU
    in every process, for a library this command never uses. Refused here, pyarrow treats
    pandas as absent. Only the console script installs this (tests and bench use pandas)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,  # noqa: ARG002 - protocol
                  target: ModuleType | None = None,  # noqa: ARG002
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError("tenant-export does not use pandas", name=fullname)
        return None


def main() -> None:
    """Console-script entry point."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    # Arrow's default pool (mimalloc) keeps freed memory for reuse: 15-40 MiB more peak RSS
    # per process in docs/benchmarks.md section 4, at the same speed. An operator's own
    # setting wins; read by pyarrow when it is first imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    try:
        app()
    except BadInput as err:  # raised by option callbacks before a command body runs
        typer.echo(f"tenant-export: error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

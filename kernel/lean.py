"""A lean process for the pipeline's own commands and flow runs: no pandas, Arrow's system pool.

pyarrow imports pandas the first time it converts a Python sequence, only to ask whether the
values are pandas objects: about 55 MiB of memory and half a second of CPU in every process, for
a library the pipeline never uses. Arrow's default pool (mimalloc) keeps freed memory for reuse:
15-40 MiB more peak RSS per process (docs/benchmarks.md section 4) at the same speed. The console
script (``tenant_export.cli``) and flow runs started by a Prefect worker (``flows/__init__.py``)
call :func:`lean_process`; tests and the benchmark do not (they use pandas themselves).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType


class NoPandas(importlib.abc.MetaPathFinder):
    """Refuses pandas: pyarrow then treats it as absent."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,  # noqa: ARG002 - protocol
                  target: ModuleType | None = None,  # noqa: ARG002
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError("tenant-export does not use pandas", name=fullname)
        return None


def lean_process() -> None:
    """Refuse pandas (unless something loaded it already) and use Arrow's system memory pool
    (unless the operator chose one; read when pyarrow is first imported)."""
    if "pandas" not in sys.modules and not any(isinstance(f, NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, NoPandas())
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

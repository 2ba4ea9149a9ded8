"""A lean process for the pipeline's own commands and flow runs: no pandas, Arrow's system pool,
glibc's large blocks given back.

pyarrow imports pandas the first time it converts a Python sequence, only to ask whether the
values are pandas objects: about 55 MiB of memory and half a second of CPU in every process, for
a library the pipeline never uses. Arrow's default pool (mimalloc) keeps freed memory for reuse:
15-40 MiB more peak RSS per process (docs/benchmarks.md section 4) at the same speed. glibc's
malloc raises its mmap threshold each time a large block is freed, so Arrow's batches and the
pool's buffers end up in heaps that are never given back, and a backup's peak RSS crept up with
the number of batches (263 -> 341 MiB from 0.4 to 4 million rows; 250 -> 272 MiB with the
threshold fixed at 128 KiB, at the same speed). The console
script (``tenant_export.cli``) and flow runs started by a Prefect worker (``flows/__init__.py``)
call :func:`lean_process`; tests and the benchmark do not (they use pandas themselves).
"""

from __future__ import annotations

import ctypes
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


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value, kept fixed


def lean_process() -> None:
    """Refuse pandas (unless something loaded it already), use Arrow's system memory pool
    (unless the operator chose one; read when pyarrow is first imported), and fix glibc's mmap
    threshold (unless the operator set ``MALLOC_MMAP_THRESHOLD_``; not glibc: nothing)."""
    if "pandas" not in sys.modules and not any(isinstance(f, NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, NoPandas())
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        fix_mmap_threshold()


def fix_mmap_threshold() -> bool:
    """Large blocks always mmapped, so freeing one gives it back (glibc only; True if set)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): their own policies apply
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))

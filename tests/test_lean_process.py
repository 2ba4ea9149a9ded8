"""The console script and a worker's flow runs keep pandas out and use Arrow's system pool
(kernel/lean.py); an operator's pool setting wins; other processes are left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys
{setup}
import pyarrow as pa
pa.array(["converting a Python list is what makes pyarrow import pandas"])
print(json.dumps({{"pandas": "pandas" in sys.modules,
                  "pool": pa.default_memory_pool().backend_name}}))
"""


def probe(setup: str, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("PREFECT__FLOW_RUN_ID", "ARROW_DEFAULT_MEMORY_POOL")}
    done = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], cwd=ROOT,
                          env={**environment, **env}, capture_output=True, text=True,
                          check=True, timeout=120)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_flow_run_started_by_a_worker_is_lean() -> None:
    assert probe("import flows", PREFECT__FLOW_RUN_ID="4b0a1c2e-0000-4000-8000-000000000000"
                 ) == {"pandas": False, "pool": "system"}


def test_the_console_script_is_lean() -> None:
    assert probe("from kernel.lean import lean_process; lean_process()") == {
        "pandas": False, "pool": "system"}


def test_other_processes_are_left_alone() -> None:
    """Without the flag pyarrow does import pandas (what the lean process avoids), and keeps
    its default pool."""
    found = probe("import flows")
    assert found["pandas"] is True and found["pool"] != "system"


@pytest.mark.parametrize("pool", ["jemalloc", "mimalloc"])
def test_an_operators_pool_setting_wins(pool: str) -> None:
    import pyarrow as pa

    if pool not in pa.supported_memory_backends():
        pytest.skip(f"this pyarrow has no {pool}")
    assert probe("from kernel.lean import lean_process; lean_process()",
                 ARROW_DEFAULT_MEMORY_POOL=pool) == {"pandas": False, "pool": pool}


MALLOC_PROBE = """
import ctypes, json
{setup}
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))  # glibc's own policy raises its mmap threshold to 4 MiB here
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(json.dumps({{"mmapped": libc.mallinfo2().hblks - before}}))
libc.free(block)
"""


def mmapped(setup: str, **env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    done = subprocess.run([sys.executable, "-c", MALLOC_PROBE.format(setup=setup)], cwd=ROOT,
                          env={**environment, **env}, capture_output=True, text=True,
                          check=True, timeout=120)
    return int(json.loads(done.stdout)["mmapped"])


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr(
    "CS_GNU_LIBC_VERSION") is None, reason="glibc's malloc only")
def test_large_blocks_stay_mmapped_in_a_lean_process() -> None:
    """A 1 MiB block after a 4 MiB one was freed: glibc would take it from its heap (never
    given back); the lean process keeps it mmapped, so freeing it gives the memory back."""
    lean = "from kernel.lean import lean_process; lean_process()"
    assert mmapped("") == 0  # glibc's dynamic threshold, what the lean process avoids
    assert mmapped(lean) == 1
    assert mmapped(lean, MALLOC_MMAP_THRESHOLD_="8388608") == 0  # the operator's choice wins

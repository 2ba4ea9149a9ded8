"""One side of the fan-out measurement, in a fresh process (``python -m bench.fanout_child``).

    flow OUT.json            the nightly flow over every tenant of the platform
    alone OUT.json [P]       the same per-tenant work without Prefect's orchestration, P at once

Imports and one-off warm-ups happen before the clock starts; the figures are the timed part's
wall and CPU seconds (this process's own, threads included).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from bench import pipeline


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    mode, out = argv[0], Path(argv[1])
    tenants = pipeline.tenants_of_platform()
    parallelism = int(argv[2]) if len(argv) > 2 else pipeline.nightly_parallelism()
    pipeline.warm_in_process()
    failed = 0
    t0, c0 = time.monotonic(), _cpu()
    if mode == "flow":
        try:
            results = pipeline.run_nightly()
            failed = sum(1 for r in results if r.get("status") != "ok")
        except Exception as err:  # noqa: BLE001 - a failed night still has a duration
            print(f"nightly failed: {err}", file=sys.stderr)
            failed = -1
    elif mode == "alone":
        failed = pipeline.backup_alone(tenants, parallelism)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    t1, c1 = time.monotonic(), _cpu()
    out.write_text(json.dumps({"mode": mode, "tenants": len(tenants), "parallelism": parallelism,
                               "wall_s": t1 - t0, "cpu_s": c1 - c0, "failed": failed,
                               "start": t0, "end": t1}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

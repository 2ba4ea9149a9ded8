"""Run one command and write its own figures: ``python bench/spawn.py OUT.json -- CMD ...``.

Why a wrapper: Linux carries the high-water RSS of the process that forks into the child's
``ru_maxrss`` across ``exec`` (``setmax_mm_hiwater_rss``), so a benchmark parent holding
hundreds of MiB would report at least that for every child it starts. This wrapper is a small
interpreter without ``site`` (about 8 MiB): the RSS it passes on is below any figure we judge.
It also reads the child's CPU time from ``wait4`` and the wall time with the system-wide
monotonic clock, which the S3 proxy uses too (so request times line up with process times).

Asked to stop (SIGTERM or SIGINT, to the whole process group: the time limit, Ctrl-C), it
lets the child stop on its own for ``GRACE_S`` seconds (a flow run records itself as crashed
and gives back its tenant lock), then kills it, and still writes what it measured.

Standard library only, no project imports: it must stay small.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

GRACE_S = 8


def main() -> int:
    out, sep, *command = sys.argv[1:]
    if sep != "--" or not command:
        print("usage: spawn.py OUT.json -- CMD [ARG ...]", file=sys.stderr)
        return 2
    child = None

    def send(sig: int) -> None:
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)

    def stop(_signum: int, _frame: object) -> None:
        send(signal.SIGTERM)
        signal.alarm(GRACE_S)

    def kill(_signum: int, _frame: object) -> None:
        send(signal.SIGKILL)

    # Handlers, not SIG_IGN: the child must not inherit "ignored".
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGALRM, kill)
    start = time.monotonic()
    try:
        child = subprocess.Popen(command)
    except OSError as err:
        print(f"spawn.py: cannot start {command[0]}: {err}", file=sys.stderr)
        return 127
    _, status, usage = os.wait4(child.pid, 0)
    end = time.monotonic()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"start": start, "end": end, "rc": child.returncode,
                   "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                   "maxrss_kib": usage.ru_maxrss}, f)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

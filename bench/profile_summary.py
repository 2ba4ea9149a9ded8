"""Where a profiled run's time went: ``python -m bench.profile_summary FILE.collapsed.txt``.

Reads the collapsed stacks ``python -m bench --profile DIR`` keeps (py-spy ``--format raw``,
wall-clock samples with waiting included) and prints the project's functions by inclusive
share of the samples, then the leaf frames (where threads actually were: a socket read, a
lock wait, hashing...). Every thread's samples count, idle worker threads included, so read
shares of the main thread's work from the project functions on its path.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

PROJECT = ("flows/", "sources/", "storage/", "exporters/", "kernel/", "tenant_export/",
           "deployments/")
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def _parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    file = found.group("file")
    for marker in PROJECT:
        at = file.find("/" + marker)
        if at >= 0 or file.startswith(marker):
            file = file[at + 1:] if at >= 0 else file
            break
    else:
        file = file.rsplit("site-packages/", 1)[-1]
    return f"{found.group('func')} ({file})"


def _is_project(frame: str) -> bool:
    found = _FRAME.match(frame.strip())
    return bool(found) and any(f"/{m}" in found.group("file") or found.group("file").startswith(m)
                               for m in PROJECT) and ".venv" not in found.group("file")


def summarise(path: Path, top: int = 25) -> str:
    stacks = _parse(path)
    total = sum(count for _, count in stacks) or 1
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        for frame in {f for f in frames if _is_project(f)}:
            inclusive[_short(frame)] += count
        leaves[_short(frames[-1])] += count
    lines = [f"{path.name}: {total:,} samples (all threads, waiting included)", "",
             "project functions, inclusive:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in inclusive.most_common(top)]
    lines += ["", "leaf frames (where the threads were):"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in leaves.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name in argv:
        print(summarise(Path(name)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

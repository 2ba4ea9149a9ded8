"""Real services for the tests, started on 127.0.0.1 and stopped afterwards.

PostgreSQL comes from Debian's server binaries (initdb refuses root, so as root it runs as the
``postgres`` user); s3rver is the npm S3 emulator that enforces SigV4 signatures and expiry;
moto's threaded server is the fast general-purpose S3 endpoint.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
S3RVER_DIR = ROOT / "tests" / "s3rver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a superuser URL with trust auth on 127.0.0.1."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="tenant-export-pg-"))
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(tmp, "postgres")
        shutil.chown(sock, "postgres")
        tmp.chmod(0o700)
    port = free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--locale=C.UTF-8"],
        check=True, capture_output=True,
    )
    proc = subprocess.Popen(
        [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
         "-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(url.replace("postgresql://", "postgresql://"), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def fresh_database(postgres_url: str, prefix: str, *settings: str) -> str:
    """A new empty database on the test server (``ALTER DATABASE ... SET`` each setting)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        for setting in settings:
            conn.execute(f"ALTER DATABASE {name} SET {setting}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def s3rver_server() -> Iterator[str]:
    """s3rver on a free port; yields its endpoint URL (credentials S3RVER/S3RVER)."""
    if not (S3RVER_DIR / "node_modules" / "@20minutes" / "s3rver").exists():
        raise RuntimeError("s3rver missing: run `make test` (it runs npm ci in tests/s3rver)")
    tmp = tempfile.mkdtemp(prefix="tenant-export-s3rver-")
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(S3RVER_DIR / "serve.js"), str(port), tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 over HTTP on a free port (does not check signatures: not for link tests)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()

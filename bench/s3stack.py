"""S3 at a distance: moto's S3 server behind the latency proxy of ``tests/s3proxy.py``, each in a
process of its own (one interpreter's lock would otherwise serialise the emulator, the proxy and
the benchmark), plus a small control API on the proxy to read its counts.

    python -m bench.s3stack moto READY_FILE           # moto on a free port
    python -m bench.s3stack proxy READY_FILE UPSTREAM LATENCY_S

Each service writes ``{"url": ...}`` (the proxy also ``"control"``) to READY_FILE once it
listens, and runs until SIGTERM. The proxy's control API (GET /stats, POST /reset,
POST /latency?s=0.02) answers on another port, so it is never counted as S3 traffic.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen

from bench import harness

UPLOADS = frozenset({"PutObject", "UploadPart"})


# -- the services (child processes) -----------------------------------------------------------


def _serve_moto(ready: Path) -> None:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = harness.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _ready(ready, {"url": f"http://127.0.0.1:{port}"})
    _wait_for_term()
    server.stop()


def _counting_proxy_class() -> type:
    """``S3Proxy`` plus counts by bucket, uploaded bytes and the first and last request."""
    from tests.s3proxy import S3Proxy, S3Request  # noqa: PLC0415

    class CountingProxy(S3Proxy):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.extra_lock = threading.Lock()
            self.by_bucket: Counter[str] = Counter()
            self.upload_bytes: Counter[str] = Counter()
            self.first_at: float | None = None
            self.last_at: float | None = None

        def _admit(self, request: S3Request) -> Any:
            fault = super()._admit(request)
            now = time.monotonic()
            size = 0
            if request.operation in UPLOADS:  # aws-chunked bodies say their decoded length
                size = int(request.headers.get("x-amz-decoded-content-length")
                           or request.headers.get("Content-Length") or 0)
            with self.extra_lock:
                self.by_bucket[request.bucket or "-"] += 1
                self.upload_bytes[request.bucket or "-"] += size
                arrived = now - self.latency_s
                self.first_at = arrived if self.first_at is None else self.first_at
                self.last_at = now
            return fault

        def stats(self) -> dict[str, Any]:
            with self.extra_lock:
                return {"ops": self.counts(), "total": self.total(),
                        "by_bucket": dict(self.by_bucket),
                        "upload_bytes": dict(self.upload_bytes),
                        "first_at": self.first_at, "last_at": self.last_at,
                        "latency_s": self.latency_s}

        def reset_all(self) -> None:
            with self.extra_lock:
                self.reset()
                self.by_bucket.clear()
                self.upload_bytes.clear()
                self.first_at = self.last_at = None

    return CountingProxy


def _serve_proxy(ready: Path, upstream: str, latency_s: float) -> None:
    proxy = _counting_proxy_class()(upstream, latency_s=latency_s, record=False).start()

    class Control(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _answer(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(proxy.stats())

        def do_POST(self) -> None:
            target = urlsplit(self.path)
            if target.path == "/reset":
                proxy.reset_all()
            elif target.path == "/latency":
                proxy.latency_s = float(parse_qs(target.query)["s"][0])
            self._answer(proxy.stats())

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    _ready(ready, {"url": proxy.url, "control": f"http://127.0.0.1:{control.server_address[1]}"})
    _wait_for_term()
    control.shutdown()
    proxy.stop()


def _ready(path: Path, info: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(path)


def _wait_for_term() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


# -- the benchmark's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy saw between two resets."""

    ops: dict[str, int]
    total: int
    by_bucket: dict[str, int]
    upload_bytes: dict[str, int]
    first_at: float | None
    last_at: float | None

    def uploaded(self, *buckets: str) -> int:
        return sum(self.upload_bytes.get(b, 0) for b in buckets)

    def requests(self, *buckets: str) -> int:
        return sum(self.by_bucket.get(b, 0) for b in buckets)

    def top_ops(self, n: int = 6) -> str:
        ranked = sorted(self.ops.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{op} {count:,}" for op, count in ranked[:n]) or "none"


class S3Stack:
    """moto and the proxy as child processes; buckets made on moto directly (not counted)."""

    access_key = "bench"
    region = "us-east-1"

    def __init__(self, work: Path, latency_s: float) -> None:
        self.work = work
        self.latency_s = latency_s
        self.secret_key = os.urandom(12).hex()
        self.moto_url = self.proxy_url = self.control_url = ""
        self.moto_pid = self.proxy_pid = 0

    def start(self) -> S3Stack:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key,
               "AWS_SECRET_ACCESS_KEY": self.secret_key, "PYTHONPATH": str(ROOT)}
        moto = self._start(["moto"], env, "moto")
        self.moto_url, self.moto_pid = moto[0]["url"], moto[1]
        proxy = self._start(["proxy", self.moto_url, str(self.latency_s)], env, "s3proxy")
        self.proxy_url, self.control_url = proxy[0]["url"], proxy[0]["control"]
        self.proxy_pid = proxy[1]
        return self

    def _start(self, args: list[str], env: dict[str, str], name: str
               ) -> tuple[dict[str, str], int]:
        ready = self.work / f"{name}.ready"
        proc = harness.PROCESSES.start(
            [sys.executable, "-m", "bench.s3stack", args[0], str(ready), *args[1:]], env,
            log=self.work / "logs" / f"{name}.log", cwd=ROOT)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise harness.BenchError(f"{name} did not start (see {self.work}/logs/{name}.log)")
            time.sleep(0.05)
        return json.loads(ready.read_text(encoding="utf-8")), proc.pid

    def client(self, *, direct: bool = True) -> Any:
        """A boto3 client on moto (``direct``: setup, not counted) or through the proxy."""
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        return boto3.client("s3", endpoint_url=self.moto_url if direct else self.proxy_url,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(max_pool_connections=32,
                                          retries={"max_attempts": 10, "mode": "standard"}))

    def create_buckets(self, *names: str) -> None:
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for name in names:
            if name not in existing:
                client.create_bucket(Bucket=name)

    def aws_env(self) -> dict[str, str]:
        """The standard AWS variables for a child that reaches S3 through the proxy."""
        return {"AWS_ENDPOINT_URL_S3": self.proxy_url, "AWS_ENDPOINT_URL": self.proxy_url,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}

    def _control(self, path: str, method: str = "GET") -> dict[str, Any]:
        with urlopen(Request(self.control_url + path, method=method,
                             data=b"" if method == "POST" else None), timeout=30) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data

    def reset(self) -> None:
        self._control("/reset", "POST")

    def stats(self) -> ProxyStats:
        data = self._control("/stats")
        return ProxyStats(data["ops"], data["total"], data["by_bucket"], data["upload_bytes"],
                          data["first_at"], data["last_at"])

    def set_latency(self, seconds: float) -> None:
        self._control(f"/latency?s={seconds}", "POST")

    def emulator_cpu_s(self) -> float:
        """CPU seconds moto and the proxy have used so far (they share the machine's CPUs)."""
        return harness.process_cpu_s(self.moto_pid) + harness.process_cpu_s(self.proxy_pid)


ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    if argv[0] == "moto":
        _serve_moto(Path(argv[1]))
    elif argv[0] == "proxy":
        _serve_proxy(Path(argv[1]), argv[2], float(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

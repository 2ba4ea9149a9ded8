"""The figures in Prometheus's text exposition format, served over HTTP at ``/metrics``.

The endpoint renders from the shared figure store at each scrape, so every worker's endpoint
shows the whole platform: Prometheus may scrape any one of them (or all, and take ``max``), and
a tenant's figures do not disappear when the worker that backed it up goes away. No
Pushgateway and no textfile collector: nothing to install beside the workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from monitoring.dogstatsd import number
from monitoring.families import BY_KEY, DERIVED, FAMILIES
from monitoring.store import Figure

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(figures: Iterable[Figure], now: float) -> str:
    """Every known family with its ``# HELP``/``# TYPE`` lines, one sample per tenant."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for figure in figures:
        if figure.family in BY_KEY:
            values[figure.family][figure.tenant_id] = figure.value
    for derived, source in DERIVED.items():
        values[derived] = {tenant: max(0.0, now - at) for tenant, at in values[source].items()}
    lines: list[str] = []
    for family in FAMILIES:
        name = family.prometheus_name
        lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        lines.extend(f'{name}{{tenant="{_label(tenant)}"}} {number(value)}'
                     for tenant, value in sorted(values[family.key].items()))
    return "\n".join(lines) + "\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], exposition: Callable[[], str]) -> None:
        super().__init__(address, _Handler)
        self.exposition = exposition


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        try:
            body = self.server.exposition().encode()
        except Exception as err:  # noqa: BLE001 - a scrape error is a 500, never a dead thread
            logger.warning("rendering /metrics failed: %s", err)
            self.send_error(500, "figures unavailable")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every 15 s would flood the worker's log."""


class MetricsEndpoint:
    """``GET /metrics`` on ``host:port`` in a background thread (port 0: any free port)."""

    def __init__(self, figures: Callable[[], Iterable[Figure]], host: str = "127.0.0.1",
                 port: int = 0, clock: Callable[[], float] = time.time) -> None:
        self._server = _Server((host, port), lambda: render(figures(), clock()))
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics-endpoint", daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def start(self) -> MetricsEndpoint:
        """Serve in the background."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

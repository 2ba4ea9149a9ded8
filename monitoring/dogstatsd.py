"""DogStatsD over UDP: fire-and-forget datagrams to the Datadog agent.

``tenant_export.backup.last_bytes:1234|g|#tenant:t-42``: the agent aggregates them and ships
them to Datadog. UDP means a missing or slow agent never slows or fails a backup; a lost
datagram is a gap in a graph, and the age gauge is sent again every minute.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Iterable, Mapping

from monitoring.families import Family

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8125
MAX_DATAGRAM = 1432
"""Bytes per datagram: fits an Ethernet MTU without fragmentation (the Datadog clients'
default for UDP); several metrics share one datagram, separated by newlines."""


def number(value: float) -> str:
    """A value as both protocols read it: integers without a decimal point or exponent."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))


def datagram(family: Family, value: float, tags: Mapping[str, str]) -> str:
    """One DogStatsD line: ``name:value|g|#key:value,...`` (``|c`` for a counter)."""
    kind = "c" if family.kind == "counter" else "g"
    line = f"{family.statsd_name}:{number(value)}|{kind}"
    if tags:
        line += "|#" + ",".join(f"{key}:{_tag(val)}" for key, val in sorted(tags.items()))
    return line


def _tag(value: str) -> str:
    """Characters that end a tag or a line never reach the agent (ids are validated before,
    this is the protocol's own guard)."""
    return "".join("_" if ch in "|,#\n\r: " else ch for ch in value)


class DogStatsd:
    """A UDP sender to ``host:port``; never raises on send (metrics never fail a run)."""

    def __init__(self, host: str, port: int = DEFAULT_PORT) -> None:
        self.address = (host, port)
        self.dropped = 0
        """Datagrams that could not be sent (agent address unresolvable, socket error)."""
        self._sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        return self._sock

    def send(self, lines: Iterable[str]) -> None:
        """Send ``lines``, packed into as few datagrams as fit ``MAX_DATAGRAM``."""
        for packet in _pack(lines):
            try:
                self._socket().sendto(packet, self.address)
            except OSError as err:  # no agent, unresolvable host, full buffer: never fatal
                self.dropped += 1
                logger.warning("DogStatsD datagram to %s:%s dropped: %s", *self.address, err)

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _pack(lines: Iterable[str]) -> Iterable[bytes]:
    packet = b""
    for line in lines:
        encoded = line.encode()
        if packet and len(packet) + 1 + len(encoded) > MAX_DATAGRAM:
            yield packet
            packet = b""
        packet = packet + b"\n" + encoded if packet else encoded
    if packet:
        yield packet

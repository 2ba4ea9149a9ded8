"""Packs: sealed blobs concatenated into one object (format 5, docs/backup-format.md 9.2.3).

This module only knows the layout: a pack's name, and how to cut its members out of a stream
of its bytes. Sealing and checking a member is :class:`storage.snapshots.SnapshotStore`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from kernel.errors import VerificationFailed

T = TypeVar("T")
PACK_PREFIX = "pack-"  # pack-<snapshot id>-<n>: never a blob name (those are hex)


def pack_time(name: str) -> datetime:
    """When a pack was written, from its name (``ValueError`` for any other name)."""
    if not name.startswith(PACK_PREFIX):
        raise ValueError(f"{name!r} is not a pack name")
    stamp = name.removeprefix(PACK_PREFIX).split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def place(entry: dict[str, Any]) -> tuple[int, int] | None:
    """A packed blob's byte range ``(start, end)`` in its pack; None for a blob alone."""
    if not entry.get("pack"):
        return None
    start, length = entry.get("pack_offset"), entry.get("ciphertext_bytes")
    if not isinstance(start, int) or not isinstance(length, int) or start < 0 or length <= 0:
        raise VerificationFailed(f"blob {entry.get('blob')} in pack {entry['pack']}: the index "
                                 f"gives no valid place (offset {start!r}, length {length!r})")
    return start, start + length


def check_sealed(data: bytes, entry: dict[str, Any], where: str) -> None:
    """A member's sealed bytes against the length and hash the index recorded."""
    expected = entry.get("ciphertext_sha256")
    if len(data) != entry.get("ciphertext_bytes") or (
            expected and hashlib.sha256(data).hexdigest() != expected):
        raise VerificationFailed(
            f"{where}: blob {entry.get('blob')} at offset {entry.get('pack_offset')} is not the "
            f"{entry.get('ciphertext_bytes')} sealed bytes the index recorded")


def cut(chunks: Iterable[bytes], members: Iterable[tuple[int, int, T]], where: str
        ) -> Iterator[tuple[T, bytes]]:
    """Each member's bytes from a stream of the pack, members sorted by offset, each once.
    Memory: one chunk and one member."""
    source = iter(chunks)
    buffer, base = b"", 0  # buffer holds the pack's bytes [base, base + len(buffer))
    for start, end, payload in members:
        if start < base:
            raise VerificationFailed(f"{where}: members overlap at offset {start}")
        while base + len(buffer) < end:
            try:
                buffer += next(source)
            except StopIteration:
                raise VerificationFailed(f"{where}: ends at byte {base + len(buffer)}, a "
                                         f"member ends at byte {end}") from None
            if base + len(buffer) <= start:  # not there yet: drop what precedes the member
                base, buffer = base + len(buffer), b""
        yield payload, buffer[start - base:end - base]
        buffer, base = buffer[end - base:], end

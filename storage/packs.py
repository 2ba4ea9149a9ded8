"""Packs: sealed blobs concatenated into one object (format 5, docs/backup-format.md 9.2.3).

This module only knows the layout: a pack's name, and how to cut its members out of a stream
of its bytes. Sealing and checking a member is :class:`storage.snapshots.SnapshotStore`'s.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kernel.errors import VerificationFailed

T = TypeVar("T")
PACK_PREFIX = "pack-"  # pack-<snapshot id>-<n>: never a blob name (those are hex)


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
    Memory: one chunk and one member (the caller's chunks may be one ranged read)."""
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


_FIELDS = ("pack", "pack_offset", "ciphertext_bytes", "ciphertext_sha256", "blob", "sha256",
           "plaintext_bytes")


class MemberSpool:
    """Packed entries of an index gathered by pack, in a temporary SQLite file: a tenant may
    have millions of documents, and a reader that checks packs one at a time must not hold
    them all in memory. A context manager; single-threaded."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tenant-export-packs-")
        self._db = sqlite3.connect(Path(self._dir.name) / "members.sqlite",
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute(f"CREATE TABLE m ({', '.join(_FIELDS)})")
        self._db.execute("BEGIN")
        self._page: list[tuple[Any, ...]] = []

    def __enter__(self) -> MemberSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._db.close()
        self._dir.cleanup()

    def add(self, entry: dict[str, Any]) -> None:
        """One packed entry (only the fields a check needs are kept)."""
        self._page.append(tuple(entry.get(f) for f in _FIELDS))
        if len(self._page) >= 1000:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany(f"INSERT INTO m VALUES ({', '.join('?' * len(_FIELDS))})",
                             self._page)
        self._page.clear()

    def packs(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Each pack with its entries (call once every entry is added)."""
        self._flush()
        self._db.execute("CREATE INDEX m_pack ON m (pack)")
        names = [p for (p,) in self._db.execute("SELECT DISTINCT pack FROM m ORDER BY pack")]
        for name in names:
            rows = self._db.execute("SELECT * FROM m WHERE pack = ?", (name,)).fetchall()
            yield name, [dict(zip(_FIELDS, row, strict=True)) for row in rows]

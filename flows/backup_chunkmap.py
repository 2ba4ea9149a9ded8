"""What a backup knows about its table chunks, in a temporary SQLite file (format 7).

A tenant of ten million rows has some 40,000 table chunks. Held as Python dictionaries — the
chunks the previous snapshot stored, the entries of this one waiting for their place in a pack,
the packs reused — they made a backup's memory grow with rows (about 3.5 KiB per chunk once the
manifest was serialised and read back). Here they sit on disk behind SQLite's bounded page
cache, as the documents' working set does (:mod:`flows.backup_scratch`).

Thread-safe: the transfer pool's workers record places while the main thread looks chunks up;
one connection under a lock, every call short.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from flows.backup_scratch import scratch_database

PAGE = 1000  # rows per query when reading back: no cursor stays open between pages

SCHEMA = """
CREATE TABLE known (blob TEXT PRIMARY KEY, info TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE used (pack TEXT NOT NULL, blob TEXT NOT NULL, PRIMARY KEY (pack, blob))
                  WITHOUT ROWID;
CREATE TABLE pending (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, blob TEXT NOT NULL,
                      entry TEXT NOT NULL);
"""


class ChunkMap:
    """Chunk name -> what is known of it (sizes, hashes, data key, place in a pack); the table
    entries of this snapshot in order; the reused packs and which of their members are used."""

    def __init__(self) -> None:
        self._dir, self._db = scratch_database("tenant-export-chunks-", SCHEMA)
        self._lock = threading.Lock()

    # -- known chunks ------------------------------------------------------------------------

    def get(self, blob: str) -> dict[str, Any] | None:
        """What is known of ``blob`` (a copy), or None."""
        with self._lock:
            row = self._db.execute("SELECT info FROM known WHERE blob = ?", (blob,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def __contains__(self, blob: object) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM known WHERE blob = ?",
                                    (blob,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM known").fetchone()[0])

    def claim(self, blob: str, info: dict[str, Any] | None = None) -> bool:
        """Record ``blob`` if it is not known yet; True when this call recorded it."""
        with self._lock:
            done = self._db.execute("INSERT OR IGNORE INTO known VALUES (?, ?)",
                                    (blob, json.dumps(info or {})))
            return done.rowcount == 1

    def update(self, blob: str, info: dict[str, Any], *, drop: tuple[str, ...] = ()) -> None:
        """Merge ``info`` into what is known of ``blob`` (recorded if new), less ``drop``."""
        with self._lock:
            row = self._db.execute("SELECT info FROM known WHERE blob = ?", (blob,)).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **info}
            for name in drop:
                merged.pop(name, None)
            self._db.execute("INSERT OR REPLACE INTO known VALUES (?, ?)",
                             (blob, json.dumps(merged)))

    def forget(self) -> None:
        """Forget every chunk and reused pack (what a damaged previous index vouched for)."""
        with self._lock:
            self._db.execute("DELETE FROM known")
            self._db.execute("DELETE FROM used")

    # -- this snapshot's table entries ---------------------------------------------------------

    def add(self, table: str, entry: dict[str, Any]) -> None:
        """Append one chunk entry of ``table`` (completed from what is known when read)."""
        with self._lock:
            self._db.execute("INSERT INTO pending (tbl, blob, entry) VALUES (?, ?, ?)",
                             (table, entry["blob"], json.dumps(entry)))

    def entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(table, entry)`` in the order added, each completed with what is known of its
        chunk now (its place in a pack, once read back)."""
        last = 0
        while True:
            with self._lock:
                page = self._db.execute(
                    "SELECT p.seq, p.tbl, p.entry, k.info FROM pending p "
                    "LEFT JOIN known k ON k.blob = p.blob "
                    "WHERE p.seq > ? ORDER BY p.seq LIMIT ?", (last, PAGE)).fetchall()
            if not page:
                return
            last = page[-1][0]
            for _, table, entry, info in page:
                yield table, {**json.loads(entry), **json.loads(info or "{}")}

    # -- reused packs ------------------------------------------------------------------------

    def use(self, pack: str, blob: str) -> None:
        """``blob``, a member of the earlier ``pack``, is used by this snapshot."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO used VALUES (?, ?)", (pack, blob))

    def used_packs(self) -> Iterator[tuple[str, list[str]]]:
        """Each reused pack with its members in use (sorted), then forgets them all: a later
        call sees only the packs used since."""
        with self._lock:
            packs = [p for (p,) in self._db.execute("SELECT DISTINCT pack FROM used ORDER BY 1")]
        for pack in packs:  # a pack's members are at most a few thousand names
            with self._lock:
                blobs = [b for (b,) in self._db.execute(
                    "SELECT blob FROM used WHERE pack = ? ORDER BY blob", (pack,))]
            yield pack, blobs
        with self._lock:
            self._db.execute("DELETE FROM used")

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the temporary database."""
        self._db.close()
        self._dir.cleanup()

    def __enter__(self) -> ChunkMap:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

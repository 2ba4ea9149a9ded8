"""One backup run's working set, in a temporary SQLite file rather than in memory.

A tenant may hold millions of documents. What the platform lists (rows), what the documents
bucket holds (a listing, or HEADs), what the previous snapshot stored (its index) and what this
snapshot will say (its entries) are joined here, on disk, through SQLite's bounded page cache,
so the backup's memory does not grow with the tenant. The database rows are spooled here too,
which lets the platform's read snapshot end before the first document is fetched.

One connection, shared by the transfer pool's workers under a lock (every call is short).
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sources.documents import DocumentRef, StoredDocument

PAGE = 1000  # rows fetched per query: reads are paged by key, no cursor stays open
CACHE_KIB = 4096  # SQLite's page cache: the memory bound of the whole join

SCHEMA = """
CREATE TABLE rows (seq INTEGER PRIMARY KEY, document_id TEXT NOT NULL, storage_key TEXT);
CREATE TABLE bucket (key TEXT PRIMARY KEY, etag TEXT, size INTEGER) WITHOUT ROWID;
CREATE TABLE previous (storage_key TEXT, etag TEXT, size INTEGER, blob TEXT NOT NULL,
                       sha256 TEXT NOT NULL, PRIMARY KEY (storage_key, etag, size))
                       WITHOUT ROWID;
CREATE TABLE known (blob TEXT PRIMARY KEY, plaintext_bytes INTEGER, ciphertext_bytes INTEGER,
                    ciphertext_sha256 TEXT, pack TEXT, pack_offset INTEGER, pack_blobs INTEGER)
                    WITHOUT ROWID;
CREATE TABLE blobs (blob TEXT PRIMARY KEY, plaintext_bytes INTEGER, ciphertext_bytes INTEGER,
                    ciphertext_sha256 TEXT, pack TEXT, pack_offset INTEGER, pack_blobs INTEGER)
                    WITHOUT ROWID;
CREATE TABLE entries (seq INTEGER PRIMARY KEY, document_id TEXT NOT NULL, storage_key TEXT,
                      status TEXT NOT NULL, etag TEXT, size INTEGER, blob TEXT, sha256 TEXT);
"""
BLOB_INFO = ("plaintext_bytes", "ciphertext_bytes", "ciphertext_sha256", "pack", "pack_offset",
             "pack_blobs")  # a blob's sizes, hash and, when packed (format 5), its place
_INFO_SLOTS = ", ".join("?" * len(BLOB_INFO))


def scratch_database(prefix: str, schema: str
                     ) -> tuple[tempfile.TemporaryDirectory[str], sqlite3.Connection]:
    """A throwaway SQLite database in a temporary folder (delete the folder when done): no
    journal, no sync, a page cache of :data:`CACHE_KIB`, ``schema`` created and one
    transaction open (nothing here needs to survive a crash); usable from any thread under
    the caller's lock."""
    folder = tempfile.TemporaryDirectory(prefix=prefix)
    db = sqlite3.connect(Path(folder.name) / "scratch.sqlite", check_same_thread=False,
                         isolation_level=None)
    for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE",
                   f"cache_size = -{CACHE_KIB}"):
        db.execute(f"PRAGMA {pragma}")
    db.executescript(schema)
    db.execute("BEGIN")
    return folder, db


@dataclass(frozen=True)
class Planned:
    """One document row with what the bucket says now and what the previous snapshot stored
    under the same key, ETag and size (``blob`` None: nothing to reuse)."""

    seq: int
    document_id: str
    storage_key: str | None
    listed: bool  # the bucket was asked about this key (listing or HEAD)
    etag: str | None  # None with ``listed``: the object is gone
    size: int | None
    blob: str | None
    sha256: str | None
    info: dict[str, Any]


class Scratch:
    """The temporary database; a context manager that deletes it on exit."""

    def __init__(self) -> None:
        self._dir, self._db = scratch_database("tenant-export-backup-", SCHEMA)
        self._lock = threading.Lock()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._db.close()
        self._dir.cleanup()

    def _many(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert ``rows`` a page at a time; each page is drawn before the lock is taken, so
        ``rows`` may itself read the scratch (and no page outgrows ``PAGE``)."""
        source = iter(rows)
        while page := list(itertools.islice(source, PAGE)):
            with self._lock:
                self._db.executemany(sql, page)

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- filling -------------------------------------------------------------------------------

    def add_rows(self, refs: Iterable[DocumentRef]) -> None:
        """The tenant's document rows, in the platform's order (the index keeps it)."""
        self._many("INSERT INTO rows (document_id, storage_key) VALUES (?, ?)",
                   ((r.document_id, r.storage_key) for r in refs))

    def add_objects(self, found: Iterable[StoredDocument]) -> None:
        """What the documents bucket holds (a listing may hold objects no row names)."""
        self._many("INSERT OR REPLACE INTO bucket VALUES (?, ?, ?)",
                   ((d.key, d.etag, d.size) for d in found))

    def add_gone(self, key: str) -> None:
        """A key the bucket was asked about and does not hold."""
        self._one("INSERT OR REPLACE INTO bucket VALUES (?, NULL, NULL)", (key,))

    def row_keys(self) -> Iterator[str]:
        """Each distinct storage key of the rows, once (to ask the bucket about)."""
        last = ""
        while page := [k for (k,) in self._one(
                "SELECT DISTINCT storage_key FROM rows WHERE storage_key > ? "
                "ORDER BY storage_key LIMIT ?", (last, PAGE))]:
            yield from page
            last = page[-1]

    def add_previous(self, entries: Iterable[dict[str, Any]]) -> None:
        """The previous snapshot's entries whose blob its manifest vouches for."""
        vouched = (e for e in entries if e.get("blob") and e.get("listed"))
        while batch := list(itertools.islice(vouched, PAGE)):  # one pass, two tables
            self._many(f"INSERT OR IGNORE INTO known VALUES (?, {_INFO_SLOTS})",
                       ((e["blob"], *(e.get(k) for k in BLOB_INFO)) for e in batch))
            self._many("INSERT OR IGNORE INTO previous VALUES (?, ?, ?, ?, ?)",
                       ((e["storage_key"], e["etag"], e["size"], e["blob"],
                         e.get("sha256") or e["blob"])  # format 1: the name is the SHA-256
                        for e in batch
                        if None not in (e.get("storage_key"), e.get("etag"), e.get("size"))))

    def forget_previous(self) -> None:
        """Forget what the previous snapshot stored (its index failed its checks halfway)."""
        self._many("DELETE FROM previous", [()])
        self._many("DELETE FROM known", [()])

    def retire_packs(self, retire: Callable[[int, int], bool]) -> list[str]:
        """Packs this snapshot would reuse only in part that ``retire(members, used)`` says to
        rewrite. Their blobs are forgotten here, so the documents still using them are
        read and packed again; the old pack is deleted by prune with the last snapshot naming
        it (docs/backup-format.md, section 9.2.3). Call after the survey, before the plan."""
        used = self._one(
            "SELECT k.pack, k.pack_blobs, count(DISTINCT p.blob) FROM rows r "
            "JOIN bucket b ON b.key = r.storage_key JOIN previous p "
            "ON p.storage_key = r.storage_key AND p.etag = b.etag AND p.size = b.size "
            "JOIN known k ON k.blob = p.blob WHERE k.pack IS NOT NULL GROUP BY k.pack")
        retired = [pack for pack, members, n in used
                   if members is not None and n < members and retire(members, n)]
        if not retired:
            return []
        with self._lock:  # one pass over each table, however many packs retire
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS retired (pack TEXT PRIMARY KEY)")
            self._db.executemany("INSERT OR IGNORE INTO retired VALUES (?)",
                                 [(p,) for p in retired])
            self._db.execute("DELETE FROM previous WHERE blob IN (SELECT blob FROM known "
                             "WHERE pack IN (SELECT pack FROM retired))")
            self._db.execute("DELETE FROM known WHERE pack IN (SELECT pack FROM retired)")
        return retired

    # -- the join ------------------------------------------------------------------------------

    def plan(self) -> Iterator[Planned]:
        """Every row, in order, joined with the bucket's state and the previous snapshot."""
        last = 0
        while page := self._one(
                "SELECT r.seq, r.document_id, r.storage_key, b.key IS NOT NULL, b.etag, "
                "b.size, p.blob, p.sha256, " + ", ".join(f"k.{c}" for c in BLOB_INFO) +
                " FROM rows r LEFT JOIN bucket b ON b.key = r.storage_key "
                "LEFT JOIN previous p ON p.storage_key = r.storage_key AND p.etag = b.etag "
                "AND p.size = b.size LEFT JOIN known k ON k.blob = p.blob "
                "WHERE r.seq > ? ORDER BY r.seq LIMIT ?", (last, PAGE)):
            for row in page:
                info = {k: v for k, v in zip(BLOB_INFO, row[8:], strict=True) if v is not None}
                yield Planned(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6],
                              row[7], info)
            last = page[-1][0]

    # -- this snapshot's blobs and entries -----------------------------------------------------

    def claim(self, blob: str) -> bool:
        """True when this run must write ``blob``: neither written (or being written) by this
        run, nor vouched for by the previous snapshot (whose entry is then adopted)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM blobs WHERE blob = ?", (blob,)).fetchone():
                return False
            adopted = self._db.execute("INSERT INTO blobs SELECT * FROM known WHERE blob = ?",
                                       (blob,)).rowcount
            if adopted:
                return False
            self._db.execute("INSERT INTO blobs (blob) VALUES (?)", (blob,))
            return True

    def adopt(self, reused: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Blobs the previous snapshot stored, referenced again as they are."""
        self._many(f"INSERT OR IGNORE INTO blobs VALUES (?, {_INFO_SLOTS})",
                   ((blob, *(info.get(k) for k in BLOB_INFO)) for blob, info in reused))

    def record(self, blob: str, info: dict[str, Any]) -> None:
        """Sizes and ciphertext hash of a blob this run wrote (or renamed)."""
        self._one("UPDATE blobs SET " + ", ".join(f"{c} = ?" for c in BLOB_INFO) +
                  " WHERE blob = ?", (*(info.get(k) for k in BLOB_INFO), blob))

    def add_entries(self, entries: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """This snapshot's entries, by row ``seq``."""
        self._many("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   ((seq, e["document_id"], e.get("storage_key"), e["status"], e.get("etag"),
                     e.get("size"), e.get("blob"), e.get("sha256")) for seq, e in entries))

    def entries(self) -> Iterator[dict[str, Any]]:
        """This snapshot's entries in row order, each with its blob's sizes and hash."""
        names = ("document_id", "storage_key", "status", "etag", "size", "blob", "sha256",
                 *BLOB_INFO[1:])
        last = 0
        while page := self._one(
                "SELECT e.seq, e.document_id, e.storage_key, e.status, e.etag, e.size, e.blob, "
                "e.sha256, " + ", ".join(f"b.{c}" for c in BLOB_INFO[1:]) + " FROM entries e "
                "LEFT JOIN blobs b ON b.blob = e.blob WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
                (last, PAGE)):
            for row in page:
                yield dict(zip(names, row[1:], strict=True))
            last = page[-1][0]

    def blob_count(self) -> int:
        """How many distinct blobs this snapshot references."""
        return int(self._one("SELECT count(*) FROM blobs")[0][0])

"""Small document blobs packed into a few large objects (format 5, docs/backup-format.md 9.2.3).

At 20 ms per request, a thousand small documents stored one object each cost a thousand PUTs
and a thousand reads-back: more time than reading them. Packs are what restic does: each blob
is sealed exactly as it would be alone (same key, same associated data, its name the keyed hash
of its content), and the sealed blobs are concatenated into an object of about ``PACK_BYTES``,
stored with one PUT and read back with one GET. The index records, per document, the pack, the
offset and the sealed length, so one blob is read with a ranged GET and checked against its
name as before; a pack is deleted by prune once no kept snapshot names it.

A pack that this snapshot would use only in part is rewritten (its blobs still in use are
packed again, from the documents bucket) when less than half of it is in use, or when it is
older than ``REWRITE_AFTER`` and holds anything unused: a deleted document's bytes do not stay
in a backup for long after the snapshots that held it are pruned.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from storage import backup_store as layout
from storage import objects
from storage.packs import PACK_PREFIX, pack_time

PACK_BYTES = 8 * 1024 * 1024  # a pack is sent once it holds this much (one PUT, one GET)
PACKED_BLOB_BYTES = 1024 * 1024  # sealed blobs up to this size are packed; larger: alone
FLUSHES_IN_FLIGHT = 2  # packs being sent at once: the packer's memory is about 3 packs
REWRITE_AFTER = timedelta(days=30)


@dataclass(frozen=True)
class Member:
    """One sealed blob in a pack being filled."""

    blob: str
    offset: int
    length: int
    sha256: str  # of the sealed bytes
    plaintext_bytes: int


def should_retire(pack: str, members: int, used: int, now: datetime | None = None) -> bool:
    """Rewrite a pack that is less than half in use, or unused in part and old."""
    if used * 2 < members:
        return True
    try:
        written = pack_time(pack)
    except ValueError:  # not a name this code writes: leave it as it is
        return False
    return used < members and (now or datetime.now(UTC)) - written >= REWRITE_AFTER


class Packer:
    """Collects sealed blobs from the transfer pool's workers and stores them in packs.

    ``add`` is called by many threads; the one whose blob fills the pack sends it (PUT, then
    read back) while the others go on filling the next. A blob's place is recorded (``record``)
    only once its pack is read back, so the snapshot's index never names an unverified pack.
    """

    def __init__(self, s3: Any, bucket: str, tenant_id: str, snapshot_id: str,
                 record: Callable[[str, dict[str, Any]], None],
                 checkpoint: Callable[[str], None]) -> None:
        self.s3, self.bucket, self.tenant_id = s3, bucket, tenant_id
        self.snapshot_id, self._record, self._checkpoint = snapshot_id, record, checkpoint
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(FLUSHES_IN_FLIGHT)
        self._buffer = bytearray()
        self._members: list[Member] = []
        self._count = 0
        self.packs = 0  # packs stored by this run

    def add(self, blob: str, sealed: bytes, plaintext_bytes: int) -> None:
        """Append one sealed blob; sends the pack when it is full."""
        sha = hashlib.sha256(sealed).hexdigest()  # outside the lock: the workers hash at once
        with self._lock:
            self._members.append(Member(blob, len(self._buffer), len(sealed), sha,
                                        plaintext_bytes))
            self._buffer += sealed
            if len(self._buffer) < PACK_BYTES:
                return
            name, data, members = self._take()
        self._send(name, data, members)

    def close(self) -> None:
        """Send the last, partly filled pack (call once every ``add`` has returned)."""
        with self._lock:
            if not self._members:
                return
            name, data, members = self._take()
        self._send(name, data, members)

    def _take(self) -> tuple[str, bytes, list[Member]]:
        """The pack being filled, handed over; a new one begins (call under the lock)."""
        name = f"{PACK_PREFIX}{self.snapshot_id}-{self._count:05d}"
        self._count += 1
        data, members = bytes(self._buffer), self._members
        self._buffer, self._members = bytearray(), []
        return name, data, members

    def _send(self, name: str, data: bytes, members: list[Member]) -> None:
        with self._slots:
            stored = layout.put(self.s3, self.bucket, layout.blob_key(self.tenant_id, name),
                                io.BytesIO(data), self.tenant_id)
            del data
            self._checkpoint("blob-written")
            objects.verify(self.s3, self.bucket, stored, self.tenant_id)
        for m in members:
            self._record(m.blob, {"plaintext_bytes": m.plaintext_bytes,
                                  "ciphertext_bytes": m.length, "ciphertext_sha256": m.sha256,
                                  "pack": name, "pack_offset": m.offset,
                                  "pack_blobs": len(members)})
        with self._lock:
            self.packs += 1

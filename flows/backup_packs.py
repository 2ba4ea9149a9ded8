"""Small document blobs packed into a few large objects (format 5, docs/backup-format.md 9.2.3).

At 20 ms per request, a thousand small documents stored one object each cost a thousand PUTs
and a thousand reads-back: more time than reading them. Packs are what restic does: each blob
is sealed exactly as it would be alone (same key, same associated data, its name the keyed hash
of its content), and the sealed blobs are concatenated into an object of about ``PACK_BYTES``,
stored with one PUT and read back with one GET. The index records, per document, the pack, the
offset and the sealed length, so one blob is read with a ranged GET and checked against its
name as before; a pack is deleted by prune once no kept snapshot names it.

A pack that this snapshot would use less than half of is rewritten (its blobs still in use
are packed again, from the documents bucket), so unused bytes stay below half of what packs
hold. The old pack stays as long as any kept snapshot names it: a deleted document's bytes
leave the bucket only with the last snapshot naming its pack, which may be later than the last
snapshot listing the document (docs/backup-format.md 9.2.3). A rule by age was tried and
dropped: every pack has an unused member sooner or later, so it rewrote every small document
each month, and monthly snapshots kept each month's copy for a year.

Memory: the pack being filled (adders wait while it is full) and at most
``FLUSHES_IN_FLIGHT`` packs being sent.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage import backup_store as layout
from storage import objects
from storage.packs import PACK_PREFIX

PACK_BYTES = 8 * 1024 * 1024  # a pack is sent once it holds this much (one PUT, one GET)
PACKED_BLOB_BYTES = 1024 * 1024  # sealed blobs up to this size are packed; larger: alone
FLUSHES_IN_FLIGHT = 2  # packs being sent at once: the packer's memory is about 3 packs


@dataclass(frozen=True)
class Member:
    """One sealed blob in a pack being filled."""

    blob: str
    offset: int
    length: int
    sha256: str  # of the sealed bytes
    plaintext_bytes: int


def should_retire(members: int, used: int) -> bool:
    """Rewrite a pack that this snapshot would use less than half of."""
    return used * 2 < members


class Packer:
    """Collects sealed blobs from the transfer pool's workers and stores them in packs.

    ``add`` is called by many threads; the one whose blob fills the pack sends it (PUT, then
    read back) while the others go on filling the next. A blob's place is recorded (``record``)
    only once its pack is read back, so the snapshot's index never names an unverified pack.
    """

    def __init__(self, s3: Any, bucket: str, tenant_id: str, snapshot_id: str,
                 record: Callable[[str, dict[str, Any]], None],
                 checkpoint: Callable[[str], None], *, series: str = "") -> None:
        self.s3, self.bucket, self.tenant_id = s3, bucket, tenant_id
        self.snapshot_id, self._record, self._checkpoint = snapshot_id, record, checkpoint
        self.series = series  # "t" for table chunks: their packs never share a name
        self._ready = threading.Condition()  # guards the pack being filled
        self._slots = threading.BoundedSemaphore(FLUSHES_IN_FLIGHT)
        self._buffer = bytearray()
        self._members: list[Member] = []
        self._count = 0
        self.packs = 0  # packs stored by this run

    def add(self, blob: str, sealed: bytes, plaintext_bytes: int) -> None:
        """Append one sealed blob; sends the pack when it is full."""
        sha = hashlib.sha256(sealed).hexdigest()  # outside the lock: the workers hash at once
        with self._ready:
            self._ready.wait_for(lambda: len(self._buffer) < PACK_BYTES)
            self._members.append(Member(blob, len(self._buffer), len(sealed), sha,
                                        plaintext_bytes))
            self._buffer += sealed
            if len(self._buffer) < PACK_BYTES:
                return
        self._send_pack(full=True)  # this thread filled it: it sends it

    def made(self, pack: str) -> bool:
        """Whether ``pack`` is one of this snapshot's (any series), not an earlier one."""
        return pack.startswith(f"{PACK_PREFIX}{self.snapshot_id}-")

    def close(self) -> None:
        """Send the last, partly filled pack (call once every ``add`` has returned)."""
        self._send_pack(full=False)

    def _send_pack(self, *, full: bool) -> None:
        """Wait for a sending slot, then take the pack being filled and send it: while the
        slots are busy the full pack stays in place and adders wait (memory stays bounded)."""
        with self._slots:
            with self._ready:
                if not self._members or (full and len(self._buffer) < PACK_BYTES):
                    return
                name = f"{PACK_PREFIX}{self.snapshot_id}-{self.series}{self._count:05d}"
                self._count += 1
                data, members = self._buffer, self._members  # handed over, not copied
                self._buffer, self._members = bytearray(), []
                self._ready.notify_all()
            self._send(name, data, members)

    def _send(self, name: str, data: bytearray, members: list[Member]) -> None:
        body = io.BytesIO(data)
        data.clear()  # one copy of the pack in memory while it is sent, not two
        stored = layout.put(self.s3, self.bucket, layout.blob_key(self.tenant_id, name),
                            body, self.tenant_id)
        del body
        self._checkpoint("blob-written")
        objects.verify(self.s3, self.bucket, stored, self.tenant_id)
        for m in members:
            self._record(m.blob, {"plaintext_bytes": m.plaintext_bytes,
                                  "ciphertext_bytes": m.length, "ciphertext_sha256": m.sha256,
                                  "pack": name, "pack_offset": m.offset,
                                  "pack_blobs": len(members)})
        with self._ready:
            self.packs += 1

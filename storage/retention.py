"""Grandfather-father-son retention for per-tenant backup snapshots: what ``prune`` keeps.

Pure: no I/O, no clock, no S3. ``prune`` lists a tenant's committed snapshots, asks
:func:`plan_retention` which ones to keep, deletes the others, and then deletes the blobs that
:func:`unreferenced_blobs` names (snapshots first, blobs second: a blob is only garbage once no
surviving manifest points at it).

Semantics (``restic forget --keep-daily/--keep-weekly/--keep-monthly/--keep-yearly``):

* Periods are computed in ``tz`` (default ``Europe/Berlin``), from each snapshot's instant: a
  snapshot taken at 00:30 local time belongs to that local day even though it is the previous
  day in UTC. Periods are the calendar day (``daily 2026-11-26``), the ISO 8601 week, whose year
  is the ISO week-numbering year (``weekly 2026-W53`` contains 2027-01-01), the calendar month
  (``monthly 2026-11``) and the calendar year (``yearly 2026``).
* For each bucket type with a count N > 0, the verified snapshots are walked newest first and
  the newest snapshot of each of the N most recent distinct periods that contain a verified
  snapshot is kept. Periods without a snapshot do not use up the count (as in restic): a tenant
  whose backups stopped for a month still keeps N daily snapshots, just older ones.
* Only verified snapshots count. An unverified snapshot never represents a period, so it
  cannot push a verified one out of its bucket. Unverified snapshots newer than the newest
  verified one are kept (the run may still be verifying); older unverified ones are deleted
  (their verification failed or never ran, and a newer verified snapshot supersedes them).
  When no snapshot is verified at all, every snapshot is kept: nothing has been proven good,
  so there is nothing to fall back to.
* The newest verified snapshot is always kept, whatever the policy.
* A snapshot kept for several reasons lists them all, in the order daily, weekly, monthly,
  yearly, ``newest verified``, ``unverified ...``.
* "Newest" is the order by ``(taken_at as a UTC instant, snapshot_id)``: on equal instants the
  larger ``snapshot_id`` counts as newer. ``keep`` and ``delete`` are sorted newest first, so
  the plan does not depend on the order of the input.

Deliberate difference from restic: when a bucket is not filled (fewer periods than N), recent
restic additionally keeps the oldest snapshot (``restic forget -h``: "If there are not enough
snapshots to keep one for each duration related --keep-{within-,}* option, the oldest snapshot
in the group is kept additionally"). This module does not; it keeps exactly the newest
snapshot of each of the N most recent periods. With that rule, applying the plan every day
(deleting what it says, then adding the next snapshot) leaves exactly the same snapshots as
planning once over the whole history: the newest snapshot of a period is never deleted while
the period is among the N most recent, and once it falls out it can never come back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from kernel.errors import BadInput

BERLIN = ZoneInfo("Europe/Berlin")

NEWEST_VERIFIED = "newest verified"
UNVERIFIED_PENDING = "unverified, newer than the newest verified snapshot"
UNVERIFIED_NO_VERIFIED = "unverified, no verified snapshot yet"


@dataclass(frozen=True)
class RetentionPolicy:
    """How many of the most recent days, ISO weeks, months and years keep a snapshot."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    yearly: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # bool is an int subclass; ``daily=True`` is a mistake, not "1".
            if type(value) is not int or value < 0:
                raise BadInput(
                    f"retention policy: {f.name} must be a non-negative integer, got {value!r}"
                )
        if not any(getattr(self, f.name) for f in fields(self)):
            raise BadInput(
                "retention policy: daily, weekly, monthly and yearly are all 0, which would "
                "delete every snapshot; keep at least one period"
            )


@dataclass(frozen=True)
class SnapshotInfo:
    """What retention needs to know about one committed snapshot."""

    snapshot_id: str
    taken_at: datetime
    verified: bool

    def __post_init__(self) -> None:
        if not isinstance(self.snapshot_id, str) or not self.snapshot_id:
            raise BadInput(f"snapshot id must be a non-empty string, got {self.snapshot_id!r}")
        if not isinstance(self.taken_at, datetime) or self.taken_at.utcoffset() is None:
            raise BadInput(
                f"snapshot {self.snapshot_id!r}: taken_at must be a time-zone-aware datetime, "
                f"got {self.taken_at!r}"
            )
        if not isinstance(self.verified, bool):
            raise BadInput(
                f"snapshot {self.snapshot_id!r}: verified must be a bool, got {self.verified!r}"
            )


@dataclass(frozen=True)
class RetentionPlan:
    """``keep`` and ``delete`` partition the input, both newest first; ``reasons`` has one
    entry per kept snapshot (and none for deleted ones), in ``keep`` order."""

    keep: list[SnapshotInfo] = field(default_factory=list)
    delete: list[SnapshotInfo] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)


def _day(local: datetime) -> str:
    return local.date().isoformat()


def _week(local: datetime) -> str:
    iso = local.isocalendar()
    return f"{iso.year:04d}-W{iso.week:02d}"


def _month(local: datetime) -> str:
    return f"{local.year:04d}-{local.month:02d}"


def _year(local: datetime) -> str:
    return f"{local.year:04d}"


_BUCKETS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
    ("yearly", _year),
)


def _newest_first(snapshots: Iterable[SnapshotInfo]) -> list[SnapshotInfo]:
    # Normalised to UTC: datetimes sharing a tzinfo compare by wall clock and ignore ``fold``,
    # which would put 02:30 CET (after the clocks go back) before 02:45 CEST.
    return sorted(
        snapshots, key=lambda s: (s.taken_at.astimezone(UTC), s.snapshot_id), reverse=True
    )


def plan_retention(
    snapshots: Sequence[SnapshotInfo],
    policy: RetentionPolicy,
    tz: tzinfo = BERLIN,
) -> RetentionPlan:
    """Which snapshots ``prune`` keeps and which it deletes (see the module docstring)."""
    seen: set[str] = set()
    for snap in snapshots:
        if snap.snapshot_id in seen:
            raise BadInput(f"snapshot id {snap.snapshot_id!r} appears more than once")
        seen.add(snap.snapshot_id)

    ordered = _newest_first(snapshots)
    reasons: dict[str, list[str]] = {s.snapshot_id: [] for s in ordered}
    verified = [s for s in ordered if s.verified]

    for name, period_of in _BUCKETS:
        remaining: int = getattr(policy, name)
        last: str | None = None
        for snap in verified:
            if remaining == 0:
                break
            period = period_of(snap.taken_at.astimezone(tz))
            if period != last:  # newest first, so the first of a new period is its newest
                reasons[snap.snapshot_id].append(f"{name} {period}")
                last = period
                remaining -= 1

    if verified:
        newest_verified = verified[0]
        reasons[newest_verified.snapshot_id].append(NEWEST_VERIFIED)
        for snap in ordered:
            if snap is newest_verified:
                break
            reasons[snap.snapshot_id].append(UNVERIFIED_PENDING)  # newer, so unverified
    else:
        for snap in ordered:
            reasons[snap.snapshot_id].append(UNVERIFIED_NO_VERIFIED)

    keep = [s for s in ordered if reasons[s.snapshot_id]]
    delete = [s for s in ordered if not reasons[s.snapshot_id]]
    return RetentionPlan(
        keep=keep,
        delete=delete,
        reasons={s.snapshot_id: reasons[s.snapshot_id] for s in keep},
    )


def unreferenced_blobs(
    all_blobs: Iterable[str], kept_manifests_blob_refs: Iterable[Iterable[str]]
) -> set[str]:
    """The blobs in ``all_blobs`` that no surviving snapshot's manifest references.

    Call it with the manifests of the snapshots that survive, after those that did not have
    been deleted. A bare string where a manifest's list of references belongs is refused: it
    would be read as a list of one-character hashes and make every real blob look unreferenced.
    """
    if isinstance(all_blobs, str | bytes):
        raise BadInput("all_blobs must be an iterable of blob hashes, not a string")
    if isinstance(kept_manifests_blob_refs, str | bytes):
        raise BadInput("kept_manifests_blob_refs must be an iterable of iterables of blob hashes")
    referenced: set[str] = set()
    for refs in kept_manifests_blob_refs:
        if isinstance(refs, str | bytes):
            raise BadInput(
                "kept_manifests_blob_refs: each manifest's references must be an iterable of "
                f"blob hashes, got the string {refs!r}"
            )
        referenced.update(refs)
    return {blob for blob in all_blobs if blob not in referenced}

"""Grandfather-father-son retention: which snapshots and blobs ``prune`` may delete."""

from __future__ import annotations

import calendar
import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from kernel.errors import BadInput
from storage.retention import (
    BERLIN,
    NEWEST_VERIFIED,
    UNVERIFIED_NO_VERIFIED,
    UNVERIFIED_PENDING,
    RetentionPlan,
    RetentionPolicy,
    SnapshotInfo,
    plan_retention,
    unreferenced_blobs,
)

FIRST = date(2026, 1, 1)
LAST = date(2026, 12, 31)


def sid(day: date) -> str:
    return f"s-{day.isoformat()}"


def snap(
    day: date,
    hour: int = 3,
    minute: int = 30,
    *,
    verified: bool = True,
    fold: int = 0,
    snapshot_id: str | None = None,
) -> SnapshotInfo:
    taken_at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN, fold=fold)
    return SnapshotInfo(snapshot_id or sid(day), taken_at, verified)


def days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def year_of_nightly_snapshots() -> list[SnapshotInfo]:
    """One verified snapshot per day at 03:30 Berlin time, 2026-01-01 .. 2026-12-31."""
    return [snap(day) for day in days(FIRST, LAST)]


def expected_survivors(
    first: date, last: date, daily: int = 7, weekly: int = 4, monthly: int = 12
) -> set[date]:
    """Written from the rules, not from the module: with one snapshot per day from ``first`` to
    ``last``, a period's newest snapshot is its last day (or ``last`` for the current period)."""
    keep: set[date] = set()
    for i in range(daily):  # the last N days
        day = last - timedelta(days=i)
        if day >= first:
            keep.add(day)
    this_monday = last - timedelta(days=last.weekday())
    for i in range(weekly):  # the Sunday of each of the last N ISO weeks
        sunday = this_monday - timedelta(weeks=i) + timedelta(days=6)
        if sunday >= first:
            keep.add(min(sunday, last))
    year, month = last.year, last.month
    for _ in range(monthly):  # the last day of each of the last N months
        month_end = date(year, month, calendar.monthrange(year, month)[1])
        if month_end >= first:
            keep.add(min(month_end, last))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return keep


def ids(snapshots: list[SnapshotInfo]) -> list[str]:
    return [s.snapshot_id for s in snapshots]


# --- a simulated year -------------------------------------------------------------------------

YEAR_END_SURVIVORS = [
    # the last 7 days
    "2026-12-31",
    "2026-12-30",
    "2026-12-29",
    "2026-12-28",
    "2026-12-27",
    "2026-12-26",
    "2026-12-25",
    # the Sundays of ISO weeks 2026-W51 and 2026-W50 (W53 → 12-31 and W52 → 12-27 are above)
    "2026-12-20",
    "2026-12-13",
    # month ends (December → 12-31 is above)
    "2026-11-30",
    "2026-10-31",
    "2026-09-30",
    "2026-08-31",
    "2026-07-31",
    "2026-06-30",
    "2026-05-31",
    "2026-04-30",
    "2026-03-31",
    "2026-02-28",
    "2026-01-31",
]


def test_one_shot_over_a_year_keeps_exactly_the_expected_snapshots() -> None:
    plan = plan_retention(year_of_nightly_snapshots(), RetentionPolicy())

    expected = expected_survivors(FIRST, LAST)
    assert {s.taken_at.date() for s in plan.keep} == expected
    assert ids(plan.keep) == [f"s-{d}" for d in YEAR_END_SURVIVORS]  # newest first
    assert len(plan.keep) == len(expected) == 20
    assert len(plan.delete) == 365 - 20
    assert set(ids(plan.keep)).isdisjoint(ids(plan.delete))

    assert plan.reasons["s-2026-12-31"] == [
        "daily 2026-12-31",
        "weekly 2026-W53",
        "monthly 2026-12",
        NEWEST_VERIFIED,
    ]
    assert plan.reasons["s-2026-12-28"] == ["daily 2026-12-28"]
    assert plan.reasons["s-2026-12-27"] == ["daily 2026-12-27", "weekly 2026-W52"]
    assert plan.reasons["s-2026-12-20"] == ["weekly 2026-W51"]
    assert plan.reasons["s-2026-12-13"] == ["weekly 2026-W50"]
    assert plan.reasons["s-2026-11-30"] == ["monthly 2026-11"]
    assert plan.reasons["s-2026-02-28"] == ["monthly 2026-02"]
    assert plan.reasons["s-2026-01-31"] == ["monthly 2026-01"]
    assert list(plan.reasons) == ids(plan.keep)


def test_the_hand_written_rules_agree_with_the_plan_on_every_day_of_the_year() -> None:
    snapshots = year_of_nightly_snapshots()
    for n, day in enumerate(days(FIRST, LAST), start=1):
        plan = plan_retention(snapshots[:n], RetentionPolicy())
        assert {s.taken_at.date() for s in plan.keep} == expected_survivors(FIRST, day), day


def test_nightly_prunes_over_a_year_end_with_the_same_snapshots_as_one_shot() -> None:
    """The nightly job: back up, then prune by the plan. Stable under daily application: the
    survivors are, every day, exactly what one plan over the whole history would keep."""
    store: list[SnapshotInfo] = []
    for day in days(FIRST, LAST):
        store.append(snap(day))
        plan = plan_retention(store, RetentionPolicy())
        doomed = set(ids(plan.delete))
        store = [s for s in store if s.snapshot_id not in doomed]
        assert {s.taken_at.date() for s in store} == expected_survivors(FIRST, day), day

    assert sorted(ids(store), reverse=True) == [f"s-{d}" for d in YEAR_END_SURVIVORS]
    one_shot = plan_retention(year_of_nightly_snapshots(), RetentionPolicy())
    assert set(ids(store)) == set(ids(one_shot.keep))
    assert plan_retention(store, RetentionPolicy()).delete == []  # idempotent


def test_nightly_prunes_while_the_newest_snapshot_is_still_verifying() -> None:
    """Prune runs before the night's snapshot is verified: that snapshot is kept as pending,
    and does not push any verified snapshot out. It is verified before the next night."""
    store: list[SnapshotInfo] = []
    for day in days(FIRST, LAST):
        store = [dataclasses.replace(s, verified=True) for s in store]
        store.append(snap(day, verified=False))
        plan = plan_retention(store, RetentionPolicy())
        pending = UNVERIFIED_PENDING if day > FIRST else UNVERIFIED_NO_VERIFIED
        assert plan.reasons[sid(day)] == [pending]
        doomed = set(ids(plan.delete))
        store = [s for s in store if s.snapshot_id not in doomed]
        previous = expected_survivors(FIRST, day - timedelta(days=1)) if day > FIRST else set()
        assert {s.taken_at.date() for s in store} == previous | {day}, day

    store = [dataclasses.replace(s, verified=True) for s in store]
    final = plan_retention(store, RetentionPolicy())
    assert ids(final.keep) == [f"s-{d}" for d in YEAR_END_SURVIVORS]


# --- time zones and DST -----------------------------------------------------------------------


def test_spring_forward_day_has_its_nightly_snapshot() -> None:
    # 2026-03-29: 02:00 CET → 03:00 CEST. 02:30 does not exist (it normalises to 03:30), which is
    # why the schedule uses 03:30.
    assert datetime(2026, 3, 29, 2, 30, tzinfo=BERLIN).astimezone(UTC).astimezone(BERLIN).hour == 3
    spring = snap(date(2026, 3, 29))
    assert spring.taken_at.utcoffset() == timedelta(hours=2)
    assert spring.taken_at.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)

    week = [snap(day) for day in days(date(2026, 3, 25), date(2026, 3, 31))]
    plan = plan_retention(week, RetentionPolicy(daily=7, weekly=0, monthly=0))
    assert ids(plan.keep) == [
        sid(d) for d in reversed(list(days(date(2026, 3, 25), date(2026, 3, 31))))
    ]
    assert plan.reasons["s-2026-03-29"] == ["daily 2026-03-29"]
    assert plan.reasons["s-2026-03-30"] == ["daily 2026-03-30"]


def test_half_past_midnight_after_fall_back_lands_on_its_local_day() -> None:
    # 2026-10-25 00:30 CEST is 2026-10-24 22:30 UTC: the local day is the 25th.
    early = snap(date(2026, 10, 25), 0, 30, snapshot_id="s-2026-10-25T00:30")
    assert early.taken_at.astimezone(UTC).date() == date(2026, 10, 24)
    before = snap(date(2026, 10, 24))
    policy = RetentionPolicy(daily=2, weekly=0, monthly=0)

    plan = plan_retention([before, early], policy)
    assert plan.reasons == {
        "s-2026-10-25T00:30": ["daily 2026-10-25", NEWEST_VERIFIED],
        "s-2026-10-24": ["daily 2026-10-24"],
    }

    # Computed in UTC both would be on the 24th, and only the newer one would be its daily.
    in_utc = plan_retention([before, early], RetentionPolicy(daily=1, weekly=0, monthly=0), UTC)
    assert in_utc.reasons == {"s-2026-10-25T00:30": ["daily 2026-10-24", NEWEST_VERIFIED]}
    assert ids(in_utc.delete) == ["s-2026-10-24"]


def test_half_past_midnight_in_the_simulated_year_shares_its_day_with_the_nightly_run() -> None:
    snapshots = year_of_nightly_snapshots()
    snapshots = [s for s in snapshots if s.taken_at.date() <= date(2026, 10, 31)]
    extra = snap(date(2026, 10, 25), 0, 30, snapshot_id="s-2026-10-25T00:30")
    policy = RetentionPolicy(daily=7, weekly=0, monthly=0)

    plan = plan_retention([*snapshots, extra], policy)
    assert plan.reasons["s-2026-10-25"] == ["daily 2026-10-25"]  # 03:30, newest of the day
    assert "s-2026-10-25T00:30" in ids(plan.delete)
    assert ids(plan.keep) == [
        sid(d) for d in reversed(list(days(date(2026, 10, 25), date(2026, 10, 31))))
    ]

    # Without the 03:30 run, the 00:30 snapshot represents the 25th. Had it landed on the 24th
    # (its UTC date), it would have displaced the 24th's 03:30 snapshot and the 7 days would
    # reach back to the 24th.
    without = [s for s in snapshots if s.snapshot_id != "s-2026-10-25"]
    plan = plan_retention([*without, extra], policy)
    assert plan.reasons["s-2026-10-25T00:30"] == ["daily 2026-10-25"]
    assert ids(plan.keep) == [
        "s-2026-10-31",
        "s-2026-10-30",
        "s-2026-10-29",
        "s-2026-10-28",
        "s-2026-10-27",
        "s-2026-10-26",
        "s-2026-10-25T00:30",
    ]
    assert ids(plan.delete)[0] == "s-2026-10-24"


def test_repeated_hour_orders_by_instant_not_by_wall_clock() -> None:
    # On 2026-10-25 02:00-03:00 happens twice; 02:30 the second time (CET) is after 02:45 CEST.
    first_pass = snap(date(2026, 10, 25), 2, 45, fold=0, snapshot_id="cest-02:45")
    second_pass = snap(date(2026, 10, 25), 2, 30, fold=1, snapshot_id="cet-02:30")
    assert second_pass.taken_at.astimezone(UTC) > first_pass.taken_at.astimezone(UTC)

    plan = plan_retention([second_pass, first_pass], RetentionPolicy(daily=1, weekly=0, monthly=0))
    assert ids(plan.keep) == ["cet-02:30"]
    assert ids(plan.delete) == ["cest-02:45"]


def test_iso_week_and_year_buckets_at_the_turn_of_the_year() -> None:
    dec31 = snap(date(2026, 12, 31))
    jan2 = snap(date(2027, 1, 2))  # still ISO week 2026-W53

    weekly = plan_retention([dec31, jan2], RetentionPolicy(daily=0, weekly=1, monthly=0))
    assert weekly.reasons == {"s-2027-01-02": ["weekly 2026-W53", NEWEST_VERIFIED]}

    yearly = plan_retention([dec31, jan2], RetentionPolicy(daily=0, weekly=0, monthly=0, yearly=2))
    assert yearly.reasons == {
        "s-2027-01-02": ["yearly 2027", NEWEST_VERIFIED],
        "s-2026-12-31": ["yearly 2026"],
    }


# --- verification -----------------------------------------------------------------------------


def test_newest_verified_survives_when_the_newest_snapshot_is_unverified() -> None:
    snapshots = year_of_nightly_snapshots()
    snapshots[-1] = dataclasses.replace(snapshots[-1], verified=False)  # 12-31 still verifying

    plan = plan_retention(snapshots, RetentionPolicy(daily=0, weekly=0, monthly=1))
    assert ids(plan.keep) == ["s-2026-12-31", "s-2026-12-30"]
    assert plan.reasons == {
        "s-2026-12-31": [UNVERIFIED_PENDING],
        "s-2026-12-30": ["monthly 2026-12", NEWEST_VERIFIED],
    }
    assert len(plan.delete) == 363


def test_newest_verified_survives_even_a_policy_that_bypassed_validation() -> None:
    # Any valid policy keeps it through some bucket; the rule holds on its own as well.
    policy = RetentionPolicy(daily=1)
    object.__setattr__(policy, "daily", 0)
    object.__setattr__(policy, "weekly", 0)
    object.__setattr__(policy, "monthly", 0)
    snapshots = [snap(date(2026, 12, 30)), snap(date(2026, 12, 31), verified=False)]

    plan = plan_retention(snapshots, policy)
    assert plan.reasons == {
        "s-2026-12-31": [UNVERIFIED_PENDING],
        "s-2026-12-30": [NEWEST_VERIFIED],
    }


def test_unverified_snapshots_never_represent_a_period_and_older_ones_go() -> None:
    snapshots = [snap(day) for day in days(date(2026, 12, 20), date(2026, 12, 31))]
    failed = {"s-2026-12-29", "s-2026-12-27"}
    snapshots = [dataclasses.replace(s, verified=s.snapshot_id not in failed) for s in snapshots]
    snapshots[-1] = dataclasses.replace(snapshots[-1], verified=False)  # 12-31 still verifying

    plan = plan_retention(snapshots, RetentionPolicy(daily=7, weekly=0, monthly=0))
    assert ids(plan.keep) == [
        "s-2026-12-31",  # pending
        "s-2026-12-30",
        "s-2026-12-28",
        "s-2026-12-26",
        "s-2026-12-25",
        "s-2026-12-24",
        "s-2026-12-23",
        "s-2026-12-22",  # 7 days that have a verified snapshot
    ]
    assert plan.reasons["s-2026-12-31"] == [UNVERIFIED_PENDING]
    assert plan.reasons["s-2026-12-30"] == ["daily 2026-12-30", NEWEST_VERIFIED]
    assert {"s-2026-12-29", "s-2026-12-27"} <= set(ids(plan.delete))


def test_without_any_verified_snapshot_nothing_is_deleted() -> None:
    snapshots = [snap(day, verified=False) for day in days(date(2026, 12, 1), date(2026, 12, 31))]
    plan = plan_retention(snapshots, RetentionPolicy(daily=1, weekly=0, monthly=0))
    assert plan.delete == []
    assert len(plan.keep) == 31
    assert set(map(tuple, plan.reasons.values())) == {(UNVERIFIED_NO_VERIFIED,)}


def test_no_snapshots_no_plan() -> None:
    assert plan_retention([], RetentionPolicy()) == RetentionPlan([], [], {})


# --- several snapshots per day, ties, determinism ---------------------------------------------


def test_several_snapshots_on_one_day_keep_the_newest_of_the_day() -> None:
    snapshots = [
        snap(date(2026, 12, 30), 3, 30, snapshot_id="30-morning"),
        snap(date(2026, 12, 30), 20, 0, snapshot_id="30-evening"),
        snap(date(2026, 12, 31), 3, 30, snapshot_id="31-morning"),
        snap(date(2026, 12, 31), 12, 0, snapshot_id="31-noon"),
        snap(date(2026, 12, 31), 23, 59, snapshot_id="31-late"),
    ]
    plan = plan_retention(snapshots, RetentionPolicy(daily=7, weekly=0, monthly=0))
    assert ids(plan.keep) == ["31-late", "30-evening"]
    assert ids(plan.delete) == ["31-noon", "31-morning", "30-morning"]
    assert plan.reasons["31-late"] == ["daily 2026-12-31", NEWEST_VERIFIED]


def test_equal_instants_are_ordered_by_snapshot_id() -> None:
    berlin = snap(date(2026, 12, 31), snapshot_id="a")  # 03:30+01:00
    utc = SnapshotInfo("b", datetime(2026, 12, 31, 2, 30, tzinfo=UTC), True)  # the same instant
    for order in ([berlin, utc], [utc, berlin]):
        plan = plan_retention(order, RetentionPolicy(daily=1, weekly=0, monthly=0))
        assert ids(plan.keep) == ["b"]
        assert ids(plan.delete) == ["a"]


def test_the_plan_does_not_depend_on_input_order() -> None:
    snapshots = year_of_nightly_snapshots()
    snapshots += [snap(date(2026, 12, 31), 3, 30, snapshot_id=f"dup-{i}") for i in range(3)]
    reference = plan_retention(snapshots, RetentionPolicy(daily=5, weekly=3, monthly=6, yearly=1))
    rng = random.Random(20261231)
    for _ in range(20):
        shuffled = snapshots[:]
        rng.shuffle(shuffled)
        plan = plan_retention(shuffled, RetentionPolicy(daily=5, weekly=3, monthly=6, yearly=1))
        assert plan == reference
        assert list(plan.reasons.items()) == list(reference.reasons.items())


def test_random_histories_respect_the_invariants() -> None:
    rng = random.Random(7)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    for _ in range(300):
        snapshots = [
            SnapshotInfo(
                f"s{i:04d}",
                start + timedelta(minutes=rng.randrange(0, 60 * 24 * 500)),
                rng.random() < 0.8,
            )
            for i in range(rng.randrange(0, 60))
        ]
        counts = (
            rng.randrange(0, 10),
            rng.randrange(0, 6),
            rng.randrange(0, 14),
            rng.randrange(0, 3),
        )
        if not any(counts):
            continue
        policy = RetentionPolicy(*counts)
        plan = plan_retention(snapshots, policy)

        def order(s: SnapshotInfo) -> tuple[datetime, str]:
            return (s.taken_at, s.snapshot_id)

        assert sorted(ids(plan.keep) + ids(plan.delete)) == sorted(ids(snapshots))
        assert plan.keep == sorted(plan.keep, key=order, reverse=True)
        assert plan.delete == sorted(plan.delete, key=order, reverse=True)
        assert list(plan.reasons) == ids(plan.keep)
        assert all(plan.reasons.values())

        verified = sorted((s for s in snapshots if s.verified), key=order, reverse=True)
        if verified:
            newest = verified[0]
            assert NEWEST_VERIFIED in plan.reasons[newest.snapshot_id]
            for s in snapshots:
                if not s.verified:
                    assert (s in plan.keep) == (order(s) > order(newest))
        else:
            assert plan.delete == []

        for name, fmt in (("daily", "%Y-%m-%d"), ("monthly", "%Y-%m"), ("yearly", "%Y")):
            periods = {s.taken_at.astimezone(BERLIN).strftime(fmt) for s in verified}
            tagged = [r for rs in plan.reasons.values() for r in rs if r.startswith(name + " ")]
            assert len(tagged) == min(getattr(policy, name), len(periods))
            for s in plan.keep:  # each representative is the newest verified of its period
                for r in plan.reasons[s.snapshot_id]:
                    if r.startswith(name + " "):
                        period = r.split(" ", 1)[1]
                        newest_in = [
                            v
                            for v in verified
                            if v.taken_at.astimezone(BERLIN).strftime(fmt) == period
                        ]
                        assert newest_in[0] == s
        for s in plan.delete:
            assert s.snapshot_id not in plan.reasons

        assert plan_retention(plan.keep, policy).delete == []  # re-planning the survivors


# --- input validation -------------------------------------------------------------------------


def test_policy_defaults() -> None:
    assert dataclasses.astuple(RetentionPolicy()) == (7, 4, 12, 0)
    RetentionPolicy(daily=0, weekly=0, monthly=0, yearly=1)  # one bucket is enough
    RetentionPolicy(daily=0, weekly=0, monthly=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"daily": -1}, "daily must be a non-negative integer"),
        ({"weekly": -4}, "weekly must be a non-negative integer"),
        ({"monthly": 1.5}, "monthly must be a non-negative integer"),
        ({"yearly": "2"}, "yearly must be a non-negative integer"),
        ({"daily": True}, "daily must be a non-negative integer"),
        ({"daily": 0, "weekly": 0, "monthly": 0}, "all 0"),
        ({"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}, "all 0"),
    ],
)
def test_policy_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetentionPolicy().daily = 0  # type: ignore[misc]


def test_snapshot_validation() -> None:
    with pytest.raises(BadInput, match="time-zone-aware"):
        SnapshotInfo("s", datetime(2026, 12, 31, 3, 30), True)
    with pytest.raises(BadInput, match="non-empty"):
        SnapshotInfo("", datetime(2026, 12, 31, 3, 30, tzinfo=BERLIN), True)
    with pytest.raises(BadInput, match="verified must be a bool"):
        SnapshotInfo("s", datetime(2026, 12, 31, 3, 30, tzinfo=BERLIN), 1)  # type: ignore[arg-type]


def test_duplicate_snapshot_ids_are_refused() -> None:
    snapshots = [
        snap(date(2026, 12, 30), snapshot_id="x"),
        snap(date(2026, 12, 31), snapshot_id="x"),
    ]
    with pytest.raises(BadInput, match="'x' appears more than once"):
        plan_retention(snapshots, RetentionPolicy())


# --- blobs ------------------------------------------------------------------------------------


def test_unreferenced_blobs_basics() -> None:
    assert unreferenced_blobs(["a", "b", "c", "d"], [["a"], ["b", "a"], []]) == {"c", "d"}
    assert unreferenced_blobs(["a", "b"], []) == {"a", "b"}  # no survivors: all garbage
    assert unreferenced_blobs([], [["a"]]) == set()  # a dangling reference is not a blob
    # single-pass iterables work
    assert unreferenced_blobs(iter(["a", "b"]), (iter(r) for r in [["b"]])) == {"a"}


def test_unreferenced_blobs_refuses_strings_for_reference_lists() -> None:
    with pytest.raises(BadInput, match="string"):
        unreferenced_blobs(["ab", "cd"], ["ab"])  # would look like references "a" and "b"
    with pytest.raises(BadInput, match="iterable of iterables"):
        unreferenced_blobs(["ab"], "ab")
    with pytest.raises(BadInput, match="not a string"):
        unreferenced_blobs("ab", [["ab"]])


def test_no_blob_a_surviving_snapshot_references_is_ever_unreferenced() -> None:
    rng = random.Random(424242)
    universe = [f"{i:064x}" for i in range(80)]
    for _ in range(300):
        manifests = {
            f"s{i:03d}": set(rng.sample(universe, rng.randrange(0, 12)))
            for i in range(rng.randrange(1, 40))
        }
        snapshots = [
            SnapshotInfo(
                name,
                datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(0, 24 * 365)),
                rng.random() < 0.85,
            )
            for name in manifests
        ]
        policy = RetentionPolicy(
            daily=rng.randrange(1, 8), weekly=rng.randrange(0, 5), monthly=rng.randrange(0, 13)
        )
        plan = plan_retention(snapshots, policy)
        stored = set(rng.sample(universe, rng.randrange(0, len(universe))))
        stored |= {b for refs in manifests.values() for b in refs}
        kept_refs = [manifests[s.snapshot_id] for s in plan.keep]

        garbage = unreferenced_blobs(stored, kept_refs)

        referenced = set().union(*kept_refs)
        assert garbage.isdisjoint(referenced)
        assert garbage == stored - referenced
        only_deleted = {b for s in plan.delete for b in manifests[s.snapshot_id]} - referenced
        assert only_deleted <= garbage


def test_a_year_of_nightly_prunes_never_deletes_a_blob_a_survivor_needs() -> None:
    """Content-addressed documents: most carry over from the night before, a few change."""
    rng = random.Random(2026)
    documents = [f"doc-{i}-v0" for i in range(50)]
    blobs: set[str] = set()
    manifests: dict[str, list[str]] = {}
    store: list[SnapshotInfo] = []
    for day in days(FIRST, LAST):
        for i in rng.sample(range(len(documents)), 2):
            documents[i] = f"doc-{i}-{day.isoformat()}"
        tables = [f"tables-{day.isoformat()}"]
        manifests[sid(day)] = documents + tables
        blobs.update(manifests[sid(day)])
        store.append(snap(day))

        plan = plan_retention(store, RetentionPolicy())
        store = plan.keep  # snapshots first ...
        blobs -= unreferenced_blobs(blobs, (manifests[s.snapshot_id] for s in store))  # then blobs

        for s in store:
            missing = set(manifests[s.snapshot_id]) - blobs
            assert not missing, (day, s.snapshot_id, missing)

    assert ids(store) == [f"s-{d}" for d in YEAR_END_SURVIVORS]
    assert blobs == {b for s in store for b in manifests[s.snapshot_id]}

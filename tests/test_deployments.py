"""What the Prefect UI offers, and the nightly schedule (Europe/Berlin, outside the DST hour)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from deployments.serve import NIGHTLY_BACKUP_CRON, TIMEZONE, build_deployments


def test_deployments_and_schedules() -> None:
    deployments = {d.name: d for d in build_deployments()}
    assert {"offboarding-export", "export-links", "assisted-migration", "nightly-backup",
            "prune-backups", "verify-backup", "restore-backup"} <= set(deployments)
    nightly = deployments["nightly-backup"]
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == NIGHTLY_BACKUP_CRON
    assert schedule.schedule.timezone == TIMEZONE == "Europe/Berlin"
    assert not deployments["offboarding-export"].schedules  # exports run on demand only


def test_nightly_runs_once_a_night_across_both_dst_switches() -> None:
    """Daily at a fixed wall-clock time that exists exactly once on both switch days."""
    minute, hour, day, month, weekday = NIGHTLY_BACKUP_CRON.split()
    assert (day, month, weekday) == ("*", "*", "*")
    assert not 2 <= int(hour) < 3  # the hour DST skips (March) or repeats (October)
    berlin = ZoneInfo(TIMEZONE)
    for switch in (datetime(2026, 3, 29), datetime(2026, 10, 25)):
        for offset in (-1, 0, 1):
            local = (switch + timedelta(days=offset)).replace(hour=int(hour), minute=int(minute))
            first = local.replace(tzinfo=berlin, fold=0)
            second = local.replace(tzinfo=berlin, fold=1)
            assert first.utcoffset() == second.utcoffset()  # neither skipped nor repeated
            round_trip = first.astimezone(ZoneInfo("UTC")).astimezone(berlin)
            assert round_trip.replace(tzinfo=None) == local  # the time exists

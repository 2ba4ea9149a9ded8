"""kernel.ids and kernel.timeparse: identifiers and durations validated at the edge."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from kernel.errors import BadInput, TerminalError
from kernel.ids import new_export_id, validate_export_id, validate_tenant_id
from kernel.timeparse import MAX_LINK_TTL_SECONDS, parse_duration, parse_link_ttl


@pytest.mark.parametrize(
    "tenant_id", ["t-1", "acme.corp_2", "a", "0", "A" * 128, "x.y-z_w", "ACME", "9lives"]
)
def test_valid_tenant_ids_are_returned_unchanged(tenant_id: str) -> None:
    assert validate_tenant_id(tenant_id) == tenant_id


@pytest.mark.parametrize(
    "tenant_id",
    ["", "../x", "a/b", "a b", "x" * 129, ".hidden", "-x", "a..b", "_x", "..", ".", "a\\b",
     "a\x00b", "a\tb", "\nacme", "acme;drop", "a'b", 'a"b', "a%2fb", "é", "acme\u202e",
     "a*", "a:b", " acme", "acme ", "a\rb"],
)
def test_invalid_tenant_ids_are_refused(tenant_id: str) -> None:
    with pytest.raises(BadInput, match="invalid tenant id"):
        validate_tenant_id(tenant_id)


@pytest.mark.parametrize(
    ("validate", "value"),
    [(validate_tenant_id, "acme\n"), (validate_export_id, "20261126T101500Z-3f2a\n")],
)
def test_trailing_newline_is_refused(validate: Callable[[str], str], value: str) -> None:
    with pytest.raises(BadInput):
        validate(value)


@pytest.mark.parametrize("tenant_id", [None, 42, b"acme"])
def test_non_string_tenant_ids_are_refused(tenant_id: object) -> None:
    with pytest.raises(BadInput):
        validate_tenant_id(tenant_id)  # type: ignore[arg-type]


def test_bad_input_is_terminal() -> None:
    with pytest.raises(TerminalError):
        validate_tenant_id("../x")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300), (300, 300), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800),
     (" 5m ", 300), ("1", 1), ("0300", 300), ("5 m", 300), ("\t2h\n", 7200)],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["0", "-5", "1w", "abc", "", " ", "0s", "0d", "1.5h", "5mm", "m", "5 5m", "+5",
             "1e3", "5M", "5H", "0x10", 0, -5],
)
def test_parse_duration_refuses(text: str | int) -> None:
    with pytest.raises(BadInput, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("604800", 604800),
                                                (604800, 604800), ("168h", 604800),
                                                ("10080m", 604800), ("1s", 1), ("15m", 900)])
def test_parse_link_ttl_accepts_up_to_seven_days(text: str | int, seconds: int) -> None:
    assert parse_link_ttl(text) == seconds
    assert seconds <= MAX_LINK_TTL_SECONDS == 604800


@pytest.mark.parametrize("text", ["8d", "604801", 604801, "169h", "99999999999999999999d"])
def test_parse_link_ttl_refuses_beyond_seven_days(text: str | int) -> None:
    with pytest.raises(BadInput, match="7 days"):
        parse_link_ttl(text)


@pytest.mark.parametrize("text", ["0", "abc", "-1"])
def test_parse_link_ttl_refuses_invalid_durations(text: str) -> None:
    with pytest.raises(BadInput):
        parse_link_ttl(text)


def test_new_export_id_is_valid() -> None:
    for _ in range(50):
        export_id = new_export_id()
        assert validate_export_id(export_id) == export_id


def test_new_export_id_encodes_utc_time() -> None:
    moment = datetime(2026, 11, 26, 10, 15, 0, 999999, tzinfo=UTC)
    assert new_export_id(moment).startswith("20261126T101500Z-")
    plus_two = datetime(2026, 11, 26, 12, 15, 0, tzinfo=timezone(timedelta(hours=2)))
    assert new_export_id(plus_two).startswith("20261126T101500Z-")


def test_new_export_ids_are_random_and_sort_by_time() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    moments = [start + timedelta(seconds=s) for s in (0, 1, 59, 3600, 86400, 86400 * 400)]
    ids = [new_export_id(m) for m in reversed(moments)]
    assert sorted(ids) == list(reversed(ids))
    same_second = {new_export_id(start) for _ in range(100)}
    assert len(same_second) == 100


@pytest.mark.parametrize(
    "export_id",
    ["", "20261126T101500Z", "20261126T101500Z-", "20261126T101500Z-3F2A", "20261126T101500Z-3f2",
     "20261126T101500Z-" + "a" * 33, "2026-11-26T10:15:00Z-3f2a", "../20261126T101500Z-3f2a",
     "20261126T101500Z-3f2a/..", "20261126T101500-3f2a", " 20261126T101500Z-3f2a"],
)
def test_invalid_export_ids_are_refused(export_id: str) -> None:
    with pytest.raises(BadInput, match="invalid export id"):
        validate_export_id(export_id)


def test_artifact_keys_keep_tenants_apart_that_prefect_would_fold_together() -> None:
    """Prefect keys allow lowercase letters, digits and dashes: T.1, t-1, t_1 and t.1 would
    otherwise share one artifact, each run overwriting another tenant's."""
    import re

    from kernel.ids import artifact_key

    names = ["T.1", "t-1", "t_1", "t.1", "T-1", "é", "e", "x" * 200, "x" * 201]
    keys = [artifact_key("export", name) for name in names]
    assert len(set(keys)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9-]+", key) for key in keys), keys
    assert artifact_key("export", "t-1") == artifact_key("export", "t-1")  # stable per tenant

"""The benchmark's own machinery (bench/), not the pipeline: what it measures must be true.

Peak RSS belongs to the measured command (not inherited from the benchmark), a command past
its time limit is stopped with its figures kept, the proxy counts by bucket and bytes, the
native tools' queries select the tenant's rows, verdicts are never hidden, and a partial run
keeps the other sections of docs/benchmarks.md.
"""

from __future__ import annotations

import sqlite3
import sys
import time
import tomllib
from pathlib import Path

import pytest

from bench import harness, platforms, report
from bench.platforms import Size
from bench.report import Check
from tenant_export.refplatform import PlatformSpec, create_sqlite


def test_peak_rss_is_the_commands_own_not_the_benchmarks(tmp_path: Path) -> None:
    ballast = bytearray(300 * 2**20)  # the benchmark holding 300 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = harness.measure("small", [sys.executable, "-S", "-c", "pass"], {}, tmp_path,
                            timeout=60)
    big = harness.measure("big", [sys.executable, "-S", "-c",
                                  "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                          {}, tmp_path, timeout=60)
    del ballast
    assert small.ok and big.ok
    assert small.peak_rss_mib < 100
    assert 200 <= big.peak_rss_mib < 300
    assert big.cpu_s > 0 and big.wall_s > 0


def test_a_command_past_its_time_limit_is_stopped_and_still_measured(tmp_path: Path) -> None:
    started = time.monotonic()
    measured = harness.measure("sleepy", ["sleep", "30"], {}, tmp_path, timeout=0.5)
    assert time.monotonic() - started < 10
    assert measured.timed_out and not measured.ok
    assert measured.rc != 0 and measured.wall_s > 0.2  # stopped, and its figures kept
    assert harness.PROCESSES._running == []


def test_the_s3_stack_counts_requests_by_bucket_and_uploaded_bytes(tmp_path: Path) -> None:
    from bench.s3stack import S3Stack

    (tmp_path / "logs").mkdir()
    stack = S3Stack(tmp_path, latency_s=0.01).start()
    try:
        stack.create_buckets("a-bucket", "b-bucket")
        stack.reset()
        client = stack.client(direct=False)
        client.put_object(Bucket="a-bucket", Key="k", Body=b"x" * 1000)
        client.get_object(Bucket="a-bucket", Key="k")["Body"].read()
        client.list_objects_v2(Bucket="b-bucket")
        stats = stack.stats()
        assert stats.ops == {"PutObject": 1, "GetObject": 1, "ListObjectsV2": 1}
        assert stats.by_bucket == {"a-bucket": 2, "b-bucket": 1}
        assert stats.uploaded("a-bucket") == 1000
        assert stats.first_at is not None and stats.last_at is not None
        stack.create_buckets("c-bucket")  # setup goes to moto directly: not counted
        assert stack.stats().total == 3
    finally:
        harness.PROCESSES.stop_all()
    assert harness.PROCESSES._running == []


def test_spec_for_reaches_the_requested_tenant_size() -> None:
    for rows in (2_000, 50_000, 1_000_000):
        spec = platforms.spec_for(Size(rows=rows, documents=100))
        per_tenant = (spec.estimated_rows() - 14) / spec.tenants
        assert rows <= per_tenant < rows * 1.05
        assert spec.documents_per_tenant == 100


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    db = tmp_path_factory.mktemp("bench") / "tiny.sqlite"
    return db, create_sqlite(db, PlatformSpec.tiny())


def test_native_queries_select_the_tenants_rows(tiny: tuple[Path, object]) -> None:
    db, platform = tiny
    tenant = platform.tenant_ids[0]  # type: ignore[attr-defined]
    owned = platform.owned[tenant]  # type: ignore[attr-defined]
    with sqlite3.connect(db) as conn:
        for table, sql in platforms.tenant_queries(tenant, "sqlite"):
            found = conn.execute(sql).fetchall()
            assert len(found) >= len(owned[table]), table  # cross-tenant rows may add some
            if table in ("members", "documents", "posts"):
                assert len(found) == len(owned[table])
                assert "password_hash" not in sql


def test_documents_only_catalog_skips_every_table_but_tenants_and_documents(
        tiny: tuple[Path, object]) -> None:
    _, platform = tiny
    rules = tomllib.loads(platforms.documents_only_catalog(platform))["tables"]  # type: ignore[arg-type]
    for table in platform.content_tables:  # type: ignore[attr-defined]
        skipped = rules.get(table, {}).get("skip", False)
        assert skipped == (table not in ("tenants", "documents")), table
    assert rules["members"]["exclude_columns"] == ["password_hash"]


def test_change_rows_edits_the_fraction_asked(tmp_path: Path) -> None:
    db = tmp_path / "p.sqlite"
    platform = create_sqlite(db, platforms.spec_for(Size(rows=3_000, documents=10)))
    tenant = platform.tenant_ids[0]
    changed = platforms.change_rows(db, tenant, 0.01, "recent")
    assert changed["members"] >= 1
    with sqlite3.connect(db) as conn:
        edited = conn.execute("SELECT count(*) FROM members WHERE tenant_id = ? AND "
                              "member_number LIKE ?", (tenant, "%" + platforms.EDITED_SUFFIX))
        assert edited.fetchone()[0] == changed["members"]


def test_verdicts_are_never_hidden() -> None:
    assert Check("a", 1.1, "x", 1.2).line().startswith("ok: a: 1.10x")
    assert Check("a", 1.3, "x", 1.2).line().startswith("MISS: a: 1.30x (target ≤ 1.20x")
    assert Check("a", 0.5, "x", 1.2, lower_bound=True).line().startswith("MISS: a: > 0.500x")
    assert Check("a", 0.5, "x", 1.2, failed=True).line().startswith("MISS: a: the measured run")
    assert Check("a", 0, "x", 1.2, skipped="no restic").line() == (
        "SKIP: a: not measured (no restic)")
    assert Check("a", 2.0, "x", 1.0, op=">=").line().startswith("ok: a")


def test_a_partial_run_keeps_the_other_sections(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "benchmarks.md"
    first = [report.Section("documents", "1. Documents"), report.Section("tables", "2. Tables")]
    first[0].check(Check("export", 3.0, "x", 1.2))
    first[1].check(Check("csv", 0.9, "x", 1.0))
    report.write_document(doc, "## Machine\n", first)
    report.replace_section(doc, "cli-startup", "## CLI start-up\n\nexport: 1.2 s")
    again = report.Section("documents", "1. Documents")
    again.check(Check("export", 1.1, "x", 1.2))
    report.write_document(doc, "## Machine\n", [again])
    text = doc.read_text()
    assert "export: 1.2 s" in text  # another benchmark's section survives
    assert "csv: 0.900x" in text  # a section this run did not measure survives
    assert "MISS**: export: 3.00x" not in text and "ok**: export: 1.10x" in text
    summary = report.read_sections(doc)["summary"]
    assert "export: 1.10x" in summary and "csv: 0.900x" in summary
    capsys.readouterr()

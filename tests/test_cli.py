"""The command line contract: exit statuses, one-line errors, JSON on stdout, nothing written on
bad input, and a valid empty package for a tenant with nothing in it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenant_export.cli import app
from tests.conftest import Platform
from tests.helpers import fetch_package, read_table

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_export_json_contract(sqlite_platform: Platform) -> None:
    code, out, err = invoke("export", "t-1", "--json", "--link-ttl", "15m")
    assert code == 0, err
    doc = json.loads(out)
    contract = {"tenant_id", "export_id", "created_at", "expires_at", "files"}
    assert contract <= set(doc)  # DESIGN §3.1, extended only
    assert set(doc) - contract == {"documents_missing", "documents_shared_keys",
                                   "package_expires_at", "notice"}
    assert doc["tenant_id"] == "t-1"
    paths = [f["path"] for f in doc["files"]]
    assert paths[:2] == [f"export-t-1-{doc['export_id']}.zip", "datapackage.json"]
    assert "data/members.csv" in paths and "documents/index.csv" in paths
    assert "data/members.xlsx" in paths and "README.html" in paths and "README.txt" in paths
    assert "documents/documents-0001.zip" in paths
    members = next(f for f in doc["files"] if f["path"] == "data/members.csv")
    assert set(members) == {"path", "url", "bytes", "sha256", "rows"} and members["rows"] > 0
    # the links live until the moment the guide inside the package states (15 min from the
    # export's start), not 15 min from when they were signed
    expires = int(re.search(r"X-Amz-Expires=(\d+)", members["url"]).group(1))  # type: ignore[union-attr]
    assert 800 < expires <= 900
    created = datetime.fromisoformat(doc["created_at"])
    assert datetime.fromisoformat(doc["expires_at"]) == created + timedelta(minutes=15)
    assert doc["notice"]["sent"] is False  # no SMTP in this test, and it says so


def test_excel_options_are_recorded(sqlite_platform: Platform) -> None:
    code, out, err = invoke("export", "t-1", "--json", "--excel-semicolon")
    assert code == 0, err
    files = fetch_package(json.loads(out))
    package = json.loads(files["datapackage.json"])
    for resource in package["resources"]:
        if resource["type"] == "table":
            assert resource["dialect"]["delimiter"] == ";" and resource["dialect"]["x-bom"]
            assert files[resource["path"]].startswith(b"\xef\xbb\xbf")
    code, out, err = invoke("export", "t-1", "--json", "--excel")
    assert code == 0, err
    members = json.loads(fetch_package(json.loads(out))["datapackage.json"])["resources"]
    dialect = next(r for r in members if r["path"] == "data/members.csv")["dialect"]
    assert dialect["delimiter"] == "," and dialect["x-formula-prefix"] == "'"


def test_unknown_tenant_exits_2_and_writes_nothing(sqlite_platform: Platform) -> None:
    code, out, err = invoke("export", "nobody")
    assert code == 2
    assert "unknown tenant 'nobody'" in err and "Traceback" not in err
    assert out == ""
    assert sqlite_platform.export_keys() == []


@pytest.mark.parametrize("tenant", ["../t-1", "t-1/x", "", "a b"])
def test_invalid_tenant_id_exits_2(sqlite_platform: Platform, tenant: str) -> None:
    code, _, err = invoke("export", tenant)
    assert code == 2 and "invalid tenant id" in err
    assert sqlite_platform.export_keys() == []


@pytest.mark.parametrize("ttl", ["8d", "604801", "0", "soon", "-1"])
def test_bad_link_ttl_exits_2(sqlite_platform: Platform, ttl: str) -> None:
    code, _, err = invoke("export", "t-1", "--link-ttl", ttl)
    assert code == 2, err
    assert "TTL" in err or "duration" in err
    assert sqlite_platform.export_keys() == []


def test_unreachable_database_exits_1(sqlite_platform: Platform,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.services import free_port

    monkeypatch.setenv("TENANT_EXPORT_SOURCE_URL",
                       f"postgresql://app:s3cret@127.0.0.1:{free_port()}/platform")
    code, _, err = invoke("export", "t-1")
    assert code == 1
    assert "cannot reach database" in err and "127.0.0.1" in err
    assert "s3cret" not in err  # the password is masked
    assert sqlite_platform.export_keys() == []


def test_missing_sqlite_file_exits_1(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    monkeypatch.setenv("TENANT_EXPORT_SOURCE_URL", f"sqlite:///{tmp_path}/nope.sqlite")
    code, _, err = invoke("export", "t-1")
    assert code == 1 and "no SQLite database" in err
    assert not (tmp_path / "nope.sqlite").exists()  # never created by accident


@pytest.mark.parametrize("variable", ["TENANT_EXPORT_EXPORT_BUCKET",
                                      "TENANT_EXPORT_DOCUMENTS_BUCKET"])
def test_missing_bucket_exits_1(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch,
                                variable: str) -> None:
    monkeypatch.setenv(variable, "no-such-bucket-anywhere")
    code, _, err = invoke("export", "t-1")
    assert code == 1
    assert "'no-such-bucket-anywhere' does not exist" in err
    assert sqlite_platform.export_keys() == []


def test_bad_catalog_exits_2(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch,
                             tmp_path: Path) -> None:
    catalog = tmp_path / "typo.toml"
    catalog.write_text('[tables.members]\nexclude_columns = ["pasword_hash"]\n')
    monkeypatch.setenv("TENANT_EXPORT_CATALOG", str(catalog))
    code, _, err = invoke("export", "t-1")
    assert code == 2 and "pasword_hash" in err  # a typo must not let a secret column out
    assert sqlite_platform.export_keys() == []


def test_empty_tenant_gives_a_valid_empty_package(sqlite_platform: Platform) -> None:
    code, out, err = invoke("export", "t-empty", "--json")
    assert code == 0, err
    doc = json.loads(out)
    files = fetch_package(doc)
    package = json.loads(files["datapackage.json"])
    assert not any(p.startswith("documents/") and p.endswith(".zip") for p in files)
    for resource in package["resources"]:
        if resource["type"] != "table":  # workbooks, the guide: not CSV
            continue
        header, rows = read_table(files, resource)
        expected = 1 if resource.get("x-source-table") == "tenants" else 0
        assert len(rows) == expected == resource["rows"], resource["path"]
        assert header
    assert files["documents/index.csv"] == (  # the header alone; column names are text: quoted
        b'"document_id","zip_part","zip_path","bytes","sha256","status","filename",'
        b'"uploaded_at"\r\n')


def test_links_command(sqlite_platform: Platform) -> None:
    code, out, _ = invoke("export", "t-1", "--json")
    first = json.loads(out)
    code, out, err = invoke("links", "t-1", "--json", "--link-ttl", "1h")
    assert code == 0, err
    again = json.loads(out)
    assert again["export_id"] == first["export_id"]
    assert [f["path"] for f in again["files"]] == [f["path"] for f in first["files"]]
    assert again["files"][0]["sha256"] == first["files"][0]["sha256"]  # the archive too
    fetch_package(again)
    code, _, err = invoke("links", "t-1", "--export-id", "20200101T000000Z-dead")
    assert code == 2 and "is gone" in err and "no complete export" in err
    code, _, err = invoke("links", "t-empty")
    assert code == 2 and "no complete export" in err
    code, _, err = invoke("links", "t-1", "--export-id", "../../x")
    assert code == 2


def test_links_for_a_package_whose_retention_ended(sqlite_platform: Platform) -> None:
    """The package was deleted by the retention cleanup: links says so, exit 2."""
    from flows.offboarding_flow import export_retention

    code, out, err = invoke("export", "t-1", "--json")
    assert code == 0, err
    export_id = json.loads(out)["export_id"]
    deleted = export_retention(now=datetime.now(UTC) + timedelta(days=31))
    assert [r["export_id"] for r in deleted] == [export_id]
    code, out, err = invoke("links", "t-1", "--export-id", export_id)
    assert code == 2 and out == ""
    assert f"export {export_id} of tenant 't-1' is gone" in err
    assert "retention ended" in err and "run a new export" in err
    assert "Traceback" not in err


def test_console_script_prints_only_json_on_stdout(sqlite_platform: Platform) -> None:
    """The installed script, in its own process, against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    script = Path(sys.executable).parent / "tenant-export"
    proc = subprocess.run([str(script), "export", "t-1", "--json"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["tenant_id"] == "t-1"
    assert "X-Amz-Signature" not in proc.stderr  # links are secrets: never in the logs
    bad = subprocess.run([str(script), "export", "nobody"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "tenant-export: error: unknown tenant 'nobody'"

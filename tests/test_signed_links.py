"""Signed links against s3rver, which enforces SigV4 signatures and expiry (moto checks neither)."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest

from tests.conftest import Platform
from tests.helpers import download, fetch_package

pytestmark = pytest.mark.s3rver


def run_export(tenant: str, ttl: int) -> dict[str, Any]:
    from flows.export_flow import ExportRequest, offboarding_export

    return offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=ttl))


def _tamper(url: str, param: str, new_value: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    changed = [(k, new_value if k == param else v) for k, v in query]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(changed)))


def test_links_download_as_attachments(s3rver_platform: Platform) -> None:
    result = run_export("t-1", ttl=600)
    files = fetch_package(result)  # plain HTTP client; sizes and hashes checked
    assert "datapackage.json" in files
    archive = f"export-t-1-{result['export_id']}.zip"
    assert result["files"][0]["path"] == archive  # the single download comes first
    for entry in result["files"][:3]:  # the archive, the manifest, a table
        status, _, headers = download(entry["url"])
        assert status == 200
        disposition = {k.lower(): v for k, v in headers.items()}["content-disposition"]
        assert disposition.startswith("attachment;")
        assert entry["path"].rsplit("/", 1)[-1] in disposition


def test_tampered_links_are_refused(s3rver_platform: Platform) -> None:
    result = run_export("t-1", ttl=600)
    url = result["files"][1]["url"]
    assert download(url)[0] == 200
    signature = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["X-Amz-Signature"]
    forged = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    status, body, _ = download(_tamper(url, "X-Amz-Signature", forged))
    assert status == 403 and b"SignatureDoesNotMatch" in body
    # pointing a valid signature at another tenant's key, or stretching its lifetime, fails too
    other = url.replace("/exports/t-1/", "/exports/t-2/")
    assert download(other)[0] == 403
    assert download(_tamper(url, "X-Amz-Expires", "604800"))[0] == 403


def test_expired_links_are_refused(s3rver_platform: Platform) -> None:
    result = run_export("t-1", ttl=1)
    url = result["files"][0]["url"]
    time.sleep(2.5)  # outlive the 1-second link; no timing is asserted
    status, body, _ = download(url)
    assert status == 403 and b"expired" in body.lower()


def test_fresh_links_for_a_retained_export(s3rver_platform: Platform) -> None:
    from flows.export_flow import export_links

    first = run_export("t-1", ttl=1)
    time.sleep(2.5)
    assert download(first["files"][0]["url"])[0] == 403
    again = export_links("t-1", None, 600)
    assert again["export_id"] == first["export_id"]
    assert [f["sha256"] for f in again["files"]] == [f["sha256"] for f in first["files"]]
    fetch_package(again)

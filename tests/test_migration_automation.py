"""Automated steps of a migration case: delivering the export into the successor's bucket and
handing out fresh links, each recorded with its own duration."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

import pytest

from flows.migration_flow import CaseInput, apply_input, open_desk
from kernel.errors import BadInput
from kernel.settings import Settings
from tests.conftest import Platform
from tests.helpers import download


def test_deliver_export_and_fresh_links(sqlite_platform: Platform) -> None:
    settings = Settings()
    desk = open_desk(settings)
    case = desk.open("t-1", False, datetime.now(UTC))["case_id"]
    successor = f"successor-{uuid.uuid4().hex[:8]}"
    sqlite_platform.s3.create_bucket(Bucket=successor)

    delivered = apply_input(settings, desk, case, "t-1", CaseInput(
        action="deliver-export", target_uri=f"s3://{successor}/incoming"))
    keys = [o["Key"] for o in sqlite_platform.s3.list_objects_v2(Bucket=successor)["Contents"]]
    manifest_key = next(k for k in keys if k.endswith("datapackage.json"))
    assert manifest_key.startswith("incoming/t-1/")
    manifest = json.loads(sqlite_platform.s3.get_object(Bucket=successor,
                                                        Key=manifest_key)["Body"].read())
    base = manifest_key.removesuffix("datapackage.json")
    for resource in manifest["resources"]:  # every file arrived intact
        body = sqlite_platform.s3.get_object(Bucket=successor,
                                             Key=base + resource["path"])["Body"].read()
        assert resource["hash"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert len(keys) == len(manifest["resources"]) + 1
    assert len(delivered["delivered"]) == len(keys)

    links = apply_input(settings, desk, case, "t-1", CaseInput(action="fresh-links",
                                                              link_ttl_seconds=600))
    assert download(links["links"]["files"][0]["url"])[0] == 200

    lines = desk.statement(case).lines
    assert [line.kind for line in lines] == ["automation", "automation"]
    assert all(line.minutes >= 1 and line.amount_eur > 0 for line in lines)
    assert "delivered to s3://" in lines[0].note

    with pytest.raises(BadInput, match="s3://bucket/prefix"):
        apply_input(settings, desk, case, "t-1", CaseInput(action="deliver-export",
                                                          target_uri="ftp://elsewhere"))
    assert len(desk.statement(case).lines) == 2  # a refused step records nothing

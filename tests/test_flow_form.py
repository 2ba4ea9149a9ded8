"""The Prefect UI form of the export, in an operator's words (issue 13): every field titled and
described, the link lifetime as a duration, the tenant id and the duration refused by the form
itself (patterns in the schema, enforced by the server too), a refused run that ends with a
one-line reason and a result artifact, run names that carry the tenant, and links in the result
that still work when copied."""

from __future__ import annotations

import re
import urllib.parse
import uuid
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from flows.export_flow import ExportRequest, offboarding_export
from tests.conftest import Platform
from tests.helpers import download


def form_schema() -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    schema: dict[str, Any] = parameter_schema(offboarding_export).model_dump_for_openapi()
    return schema


def test_ui_form_schema() -> None:
    schema = form_schema()
    assert schema["required"] == ["request"]
    request = schema["definitions"]["ExportRequest"]
    assert request["required"] == ["tenant_id"]
    for name, field in request["properties"].items():  # words, not field names
        assert field.get("title") and field["title"] != name, name
        assert len(field.get("description", "")) > 20, name
    assert request["properties"]["tenant_id"]["title"] == "Tenant"
    ttl = request["properties"]["link_ttl"]
    assert ttl["type"] == "string" and ttl["default"] == "7d"
    assert ttl["title"] == "Links stay valid for"
    assert "link_ttl_seconds" not in request["properties"]  # for programs, not the form
    assert {"excel", "excel_semicolon", "notify", "requested_by"} <= set(request["properties"])


@pytest.mark.parametrize(("field", "value", "ok"), [
    ("tenant_id", "t-1", True), ("tenant_id", "harbour-rowing", True),
    ("tenant_id", "../etc", False), ("tenant_id", "a..b", False), ("tenant_id", "a b", False),
    ("tenant_id", "-x", False), ("tenant_id", "x" * 129, False), ("tenant_id", "", False),
    ("link_ttl", "7d", True), ("link_ttl", "36h", True), ("link_ttl", "90m", True),
    ("link_ttl", "604800", True), ("link_ttl", "8d", False), ("link_ttl", "169h", False),
    ("link_ttl", "604801", False), ("link_ttl", "0", False), ("link_ttl", "soon", False),
    ("link_ttl", "1.5h", False),
])
def test_the_form_itself_refuses_what_cannot_run(field: str, value: str, ok: bool) -> None:
    """The JSON schema the UI renders refuses it (its patterns), and so does the model: the
    form and the run agree on every value."""
    schema = form_schema()
    document = {"request": {"tenant_id": "t-1", field: value}}
    valid = jsonschema.Draft202012Validator(schema).is_valid(document)
    assert valid is ok, (field, value)
    if ok:
        ExportRequest.model_validate(document["request"])
    else:
        with pytest.raises(ValidationError):
            ExportRequest.model_validate(document["request"])


@pytest.mark.parametrize("fields", [
    {"tenant_id": "../etc"}, {"tenant_id": "t-1", "link_ttl": "8d"},
    {"tenant_id": "t-1", "link_ttl_seconds": 604801}, {"tenant_id": "t-1", "link_ttl_seconds": 0},
    {"tenant_id": "t-1", "unknown": True},
    {"tenant_id": "t-1", "link_ttl": "1h", "link_ttl_seconds": 60},
])
def test_form_refuses_bad_input(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ExportRequest.model_validate(fields)


def test_programs_may_still_give_seconds() -> None:
    assert ExportRequest(tenant_id="t-1", link_ttl_seconds=600).ttl_seconds == 600
    assert ExportRequest(tenant_id="t-1", link_ttl=" 36h ").ttl_seconds == 36 * 3600
    assert ExportRequest(tenant_id="t-1", link_ttl="10m", link_ttl_seconds=600).ttl_seconds == 600
    assert ExportRequest(tenant_id="t-1").ttl_seconds == 604800


def test_the_server_enforces_the_form(prefect_server: None) -> None:
    """A deployment with the form's schema: the API refuses a bad id, accepts seconds from a
    program (the portal and the CLI of older versions pass them)."""
    from prefect.client.orchestration import get_client

    name = f"form-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("offboarding_export")
        deployment = client.create_deployment(
            flow_id=flow_id, name=name, parameter_openapi_schema=form_schema(),
            enforce_parameter_schema=True)
        try:
            with pytest.raises(Exception, match=r"(?i)validation|pattern|does not match"):
                client.create_flow_run_from_deployment(
                    deployment, parameters={"request": {"tenant_id": "../etc"}})
            run = client.create_flow_run_from_deployment(
                deployment, parameters={"request": {"tenant_id": "t-1",
                                                    "link_ttl_seconds": 600}})
            client.delete_flow_run(run.id)
        finally:
            client.delete_deployment(deployment)


def read_result_artifact(tenant: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.export_report import result_key

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[result_key(tenant)])))
    assert found, f"no result artifact for {tenant}"
    return max(found, key=lambda a: a.created)


def test_a_refused_run_ends_with_one_line_and_a_result(sqlite_platform: Platform) -> None:
    from prefect.client.orchestration import get_client

    state = offboarding_export(ExportRequest(tenant_id="nobody"), return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "\n" not in message and "Traceback" not in message
    assert "unknown tenant 'nobody'" in message
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.name == "export-nobody"  # the run says whom it was for
    artifact = read_result_artifact("nobody")
    assert artifact.type == "markdown" and artifact.flow_run_id == run.id
    assert "refused" in artifact.data and "unknown tenant 'nobody'" in artifact.data
    assert "Nothing was written" in artifact.data
    assert sqlite_platform.export_keys() == []


def test_links_in_the_result_work_when_copied(sqlite_platform: Platform) -> None:
    """Each link in its own code block: no ``&amp;`` (a table cell escaped it), and the
    sizes and checksums stay in a table of their own."""
    result = offboarding_export(ExportRequest(tenant_id="t-1", link_ttl="15m",
                                              links_in_artifact=True))
    markdown = read_result_artifact("t-1").data
    assert "&amp;" not in markdown
    table, _, links = markdown.partition("## Links")
    assert "| file | size | bytes | rows | SHA-256 |" in table and "X-Amz" not in table
    for f in result["files"]:
        assert f"`{f['sha256']}`" in table
        block = re.search(rf"\*\*{re.escape(f['path'])}\*\*\n\n```text\n(.+?)\n```", links)
        assert block is not None, f["path"]
        copied = block.group(1)
        assert copied == f["url"] and "&" in copied
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(copied).query)
        assert query["X-Amz-Expires"][0].isdigit()
    status, _, _ = download(re.search(r"```text\n(.+?)\n```", links).group(1))  # type: ignore[union-attr]
    assert status == 200


def test_links_stay_out_of_the_result_unless_asked(sqlite_platform: Platform) -> None:
    offboarding_export(ExportRequest(tenant_id="t-1"))
    markdown = read_result_artifact("t-1").data
    assert "X-Amz" not in markdown and "tenant-export links t-1" in markdown
    assert "datapackage.json" in markdown and "documents/documents-0001.zip" in markdown

"""The Prefect UI form of the export, in an operator's words (issue 13): every field titled and
described, the link lifetime as a duration, the tenant id and the duration refused by the form
itself (patterns in the schema, enforced by the server too), a refused run that ends with a
one-line reason and a result artifact, run names that carry the tenant, and links in the result
that still work when copied."""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
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


# -- every deployment's form (issue 13) ---------------------------------------------------------

NOT_OURS = {("offboarding-export", "request")}
"""Parameter headings this change does not own: the export flow's single ``request`` parameter
is still titled by its name (its model, the form's fields, is checked like every other)."""


def deployment_form(name: str) -> dict[str, Any]:
    """The parameter schema Prefect generates for a deployment's flow (what the UI renders and
    the server enforces)."""
    from prefect.utilities.callables import parameter_schema

    from deployments.definitions import load_flow, spec

    schema: dict[str, Any] = parameter_schema(load_flow(spec(name)).fn).model_dump_for_openapi()
    return schema


def fields_of(schema: dict[str, Any], properties: dict[str, Any], path: str = ""
              ) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, name, property) of every field the form shows, a model's fields included (a
    property that is a model reference is shown with its model's title and description)."""
    for name, prop in properties.items():
        ref = prop.get("$ref", "")
        model = schema["definitions"][ref.rsplit("/", 1)[-1]] if ref else {}
        yield f"{path}{name}", name, {**model, **prop}
        if model:
            yield from fields_of(schema, model["properties"], f"{path}{name}.")


def mechanical_titles(name: str) -> set[str]:
    """The titles a generator makes of a field name ("Link Ttl Seconds")."""
    words = name.replace("_", " ")
    return {name, words, words.title()}


DURATION_FIELDS = {("export-links", "link_ttl"), ("offboarding-export", "request.link_ttl")}


def test_every_deployment_form_is_in_an_operators_words() -> None:
    """Walk every deployment: each field titled in words (never its name title-cased), with a
    description, no "Property is type None" toggle, a tenant field with kernel.ids' pattern,
    and durations as text an operator types."""
    from deployments.definitions import DEPLOYMENTS
    from flows.export_form import LINK_TTL_PATTERN, TENANT_ID_PATTERN

    durations: set[tuple[str, str]] = set()
    for declared in DEPLOYMENTS:
        schema = deployment_form(declared.name)
        assert schema["properties"] or declared.name == "offboarding-sweeper", declared.name
        for path, name, prop in fields_of(schema, schema["properties"]):
            where = f"{declared.name}: {path}"
            title = prop.get("title", "")
            if (declared.name, path) not in NOT_OURS:
                assert title and title not in mechanical_titles(name), f"{where}: {title!r}"
                assert "_" not in title, where
            assert len(prop.get("description", "")) > 20, f"{where}: no description"
            shown = json.dumps(prop)
            assert "anyOf" not in shown and "oneOf" not in shown, f"{where}: a type toggle"
            assert '"null"' not in shown and '"default": null' not in shown, where
            if "tenant" in name:
                pattern = prop.get("pattern") or prop.get("items", {}).get("pattern")
                assert pattern == TENANT_ID_PATTERN, f"{where}: no tenant-id pattern"
            if "ttl" in name or "duration" in name or prop.get("pattern") == LINK_TTL_PATTERN:
                assert prop["type"] == "string" and prop["pattern"] == LINK_TTL_PATTERN, where
                durations.add((declared.name, path))
    assert durations == DURATION_FIELDS


def test_deployments_enforce_their_forms() -> None:
    """The server checks a run's parameters against the form's schema (patterns included)
    because every deployment enforces it; the schema deployed is the one tested above."""
    from deployments.definitions import build_deployments

    for deployment in build_deployments(None):
        assert deployment.enforce_parameter_schema, deployment.name
        assert (deployment._parameter_openapi_schema.model_dump_for_openapi()["properties"]
                == deployment_form(deployment.name)["properties"]), deployment.name


def server_check(name: str, parameters: dict[str, Any]) -> str:
    """What the server's schema check says of ``parameters`` ('' when it accepts them)."""
    from prefect.utilities.schema_tools import ValidationError, validate

    try:
        validate(parameters, deployment_form(name), raise_on_error=True)
    except ValidationError as err:
        return str(err)
    return ""


def run_check(name: str, parameters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What the run's own validation says ('' and the values the flow gets when accepted)."""
    from prefect.exceptions import ParameterTypeError

    from deployments.definitions import load_flow, spec

    try:
        return "", load_flow(spec(name)).validate_parameters(parameters)
    except ParameterTypeError as err:
        return str(err), {}


@pytest.mark.parametrize(("name", "link_ttl", "seconds"), [
    ("export-links", "7d", 604800), ("export-links", " 36h ", 129600),
    ("export-links", "90m", 5400), ("export-links", "600", 600),
])
def test_durations_are_typed_as_an_operator_says_them(name: str, link_ttl: str, seconds: int
                                                      ) -> None:
    from kernel.timeparse import parse_link_ttl

    parameters = {"tenant_id": "t-1", "link_ttl": link_ttl}
    assert server_check(name, parameters) == ""
    refused, values = run_check(name, parameters)
    assert refused == "" and parse_link_ttl(values["link_ttl"]) == seconds


@pytest.mark.parametrize("wrong", ["7 weeks", "8d", "1.5h", "0", "soon"])
def test_a_wrong_duration_is_refused_with_the_reason(wrong: str) -> None:
    for name, parameters in (("export-links", {"tenant_id": "t-1", "link_ttl": wrong}),
                             ("offboarding-export", {"request": {"tenant_id": "t-1",
                                                                 "link_ttl": wrong}})):
        said = server_check(name, parameters)
        assert "link_ttl" in said and "does not match" in said, (name, said)
        refused, _ = run_check(name, parameters)
        assert "link_ttl" in refused and ("invalid duration" in refused
                                          or "signed S3 links live" in refused), refused


SNAPSHOT = "20261126T023000Z-1a2b3c4d"


@pytest.mark.parametrize(("name", "parameters", "field", "reason"), [
    ("export-links", {"tenant_id": "../etc"}, "tenant_id", "invalid tenant id"),
    ("export-links", {"tenant_id": "t-1", "export_id": "latest"}, "export_id",
     "invalid export id"),
    ("verify-backup", {"tenant_id": "a..b"}, "tenant_id", "invalid tenant id"),
    ("verify-backup", {"tenant_id": "t-1", "snapshot_id": "yesterday"}, "snapshot_id",
     "invalid snapshot id"),
    ("restore-backup", {"tenant_id": "t-1", "documents_bucket": "Bad_Bucket"},
     "documents_bucket", "S3 bucket names"),
    ("restore-in-place", {"tenant_id": "t 1", "confirm": True}, "tenant_id",
     "invalid tenant id"),
    ("nightly-backup", {"tenants": ["t-1", "-x"]}, "tenants", "invalid tenant id"),
    ("nightly-backup", {"shards": 0}, "shards", "greater than or equal to 1"),
    ("offboarding", {"request": {"tenant_id": "../x", "contract_end": "2026-11-30"}},
     "tenant_id", "invalid tenant id"),
    ("offboarding", {"request": {"tenant_id": "t-1", "contract_end": "2026-11-30",
                                 "retention_days": 0}}, "retention_days", "greater than"),
    ("offboarding-sweeper", {"now": "tomorrow"}, "now", "not an ISO 8601 date-time"),
    ("export-retention", {"now": "2026-12-01T07:00:00"}, "now", "needs an offset"),
    ("purge-tenant", {"request": {"tenant_id": "t-1", "replica_buckets": ["UPPER"]}},
     "replica_buckets", "S3 bucket names"),
    ("assisted-migration", {"request": {"tenant_id": "t-1", "case_id": "M 1"}}, "case_id",
     "should match pattern"),
])
def test_the_form_and_the_run_refuse_a_wrong_value_with_the_reason(
        name: str, parameters: dict[str, Any], field: str, reason: str) -> None:
    """The server's check (the form's schema) names the field and why; so does the run's own
    validation, in the kernel's words where the kernel has a rule."""
    said = server_check(name, parameters)
    assert field in said and ("does not match" in said or "less than the minimum" in said), said
    refused, _ = run_check(name, parameters)
    assert field in refused and reason in refused, refused


@pytest.mark.parametrize(("name", "parameters", "expected"), [
    ("export-links", {"tenant_id": "t-1", "export_id": "", "link_ttl": "7d"},
     {"export_id": None, "link_ttl_seconds": None}),
    ("verify-backup", {"tenant_id": "t-1", "snapshot_id": ""}, {"snapshot_id": None}),
    ("verify-backup", {"tenant_id": "t-1", "snapshot_id": SNAPSHOT}, {"snapshot_id": SNAPSHOT}),
    ("restore-backup", {"tenant_id": "t-1", "target": "", "snapshot_id": "",
                        "documents_bucket": ""},
     {"target": None, "snapshot_id": None, "documents_bucket": None}),
    ("restore-backup", {"tenant_id": "t-1", "target": "env:SCRATCH_URL",
                        "documents_bucket": "restore-t42-documents"},
     {"target": "env:SCRATCH_URL", "documents_bucket": "restore-t42-documents"}),
    ("nightly-backup", {"tenants": []}, {"tenants": None}),
    ("nightly-backup", {"tenants": ["t-1"], "shards": 3}, {"tenants": ["t-1"], "shards": 3}),
    ("offboarding-sweeper", {"now": ""}, {"now": None}),
    ("export-retention", {"now": "2026-12-01T07:00:00+01:00", "dry_run": True},
     {"now": datetime(2026, 12, 1, 6, tzinfo=UTC), "dry_run": True}),
])
def test_an_empty_field_means_none_to_the_flow(name: str, parameters: dict[str, Any],
                                               expected: dict[str, Any]) -> None:
    """What the form sends when a field is left empty passes the server's check and reaches
    the flow as the ``None`` programs pass."""
    assert server_check(name, parameters) == ""
    refused, values = run_check(name, parameters)
    assert refused == ""
    assert {k: values.get(k) for k in expected} == expected


def test_programs_keep_calling_with_none_and_seconds() -> None:
    """Python callers pass ``None`` and, to export-links, seconds as the third argument."""
    from flows.backup_flow import nightly_backup
    from flows.export_flow import export_links
    from flows.offboarding_flow import OffboardingRequest, export_retention
    from flows.restore_flow import restore_backup

    assert export_links.validate_parameters(
        {"tenant_id": "t-1", "export_id": None, "link_ttl_seconds": 600}) == {
        "tenant_id": "t-1", "export_id": None, "link_ttl_seconds": 600, "link_ttl": "7d",
        "links_in_artifact": False, "requested_by": ""}
    assert restore_backup.validate_parameters(
        {"tenant_id": "t-1", "target": None, "snapshot_id": None})["target"] is None
    assert nightly_backup.validate_parameters({"tenants": None})["tenants"] is None
    now = datetime(2026, 12, 1, 7)  # tests drive the clock with naive times
    assert export_retention.validate_parameters({"now": now})["now"] == now
    request = OffboardingRequest(tenant_id="t-1", contract_end=date(2026, 11, 30))
    assert request.retention_days is None


def test_the_server_refuses_a_wrong_duration_of_export_links(prefect_server: None) -> None:
    """The deployment as built (schema enforced): the API refuses "7 weeks" and names the
    field; a duration, and seconds from a program, are accepted."""
    from prefect.client.orchestration import get_client

    from deployments.definitions import build_deployments, spec

    (built,) = build_deployments(None, (spec("export-links"),))
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("export_links")
        deployment = client.create_deployment(
            flow_id=flow_id, name=f"links-form-{uuid.uuid4().hex[:8]}",
            parameter_openapi_schema=built._parameter_openapi_schema.model_dump_for_openapi(),
            enforce_parameter_schema=built.enforce_parameter_schema)
        try:
            with pytest.raises(Exception, match=r"link_ttl.*does not match"):
                client.create_flow_run_from_deployment(
                    deployment, parameters={"tenant_id": "t-1", "link_ttl": "7 weeks"})
            for parameters in ({"tenant_id": "t-1", "link_ttl": "36h", "export_id": ""},
                               {"tenant_id": "t-1", "link_ttl_seconds": 600}):
                run = client.create_flow_run_from_deployment(deployment, parameters=parameters)
                client.delete_flow_run(run.id)
        finally:
            client.delete_deployment(deployment)

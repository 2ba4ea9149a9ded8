"""The Prefect UI form of the export: what an operator fills in, and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.export_flow import ExportRequest, offboarding_export


def test_ui_form_schema() -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(offboarding_export.fn).model_dump_for_openapi()
    assert schema["required"] == ["request"]
    request = schema["definitions"]["ExportRequest"]
    assert request["required"] == ["tenant_id"]
    ttl = request["properties"]["link_ttl_seconds"]
    assert ttl["default"] == ttl["maximum"] == 604800
    assert "description" in request["properties"]["tenant_id"]


@pytest.mark.parametrize("fields", [
    {"tenant_id": "../etc"}, {"tenant_id": "t-1", "link_ttl_seconds": 604801},
    {"tenant_id": "t-1", "link_ttl_seconds": 0}, {"tenant_id": "t-1", "unknown": True},
])
def test_form_refuses_bad_input(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ExportRequest.model_validate(fields)

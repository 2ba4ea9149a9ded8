"""The committed OpenAPI document is the app's own, and schemathesis, driven by it, finds no
server error and no answer that breaks it: in-process against the ASGI app, with a valid
token and without one. Exports are started by a scripted starter here (the real runs are in
test_portal_api.py); one real package is retained so downloads answer 303.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from kernel.settings import Settings
from portal.app import build_app, create_app
from portal.config import PortalSettings
from portal.openapi import render
from storage.tokens import TokenStore
from tests.conftest import Platform
from tests.test_portal_api import ScriptedStarter, bearer, publish_package

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "portal-openapi.json"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def test_the_committed_document_is_the_apps_schema() -> None:
    committed = DOCUMENT.read_text(encoding="utf-8")
    assert committed == render(), ("docs/portal-openapi.json is stale: run "
                                   "`.venv/bin/python -m portal.openapi docs/portal-openapi.json`")
    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
            return await client.get("/openapi.json")

    served = asyncio.run(fetch())
    assert served.status_code == 200 and served.json() == json.loads(committed)
    security = served.json()["components"]["securitySchemes"]["contactToken"]
    assert security == {"type": "http", "scheme": "bearer", "description": security[
        "description"]}


class Portal:
    def __init__(self, app: Any, token: str, export_id: str) -> None:
        self.app, self.token, self.export_id = app, token, export_id


class CurrentApp:
    """The ASGI app schemathesis calls in-process: the running test's own portal (each test
    has its own platform, so its own app)."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


CURRENT = CurrentApp()
schema = schemathesis.openapi.from_path(DOCUMENT)
schema.app = CURRENT


@pytest.fixture
def portal(sqlite_platform: Platform) -> Portal:
    store = TokenStore(Settings().resolved_control_url())
    token = store.issue("t-1", "a@example.org").token
    store.close()
    export_id = publish_package("t-1")
    app = create_app(Settings(), PortalSettings(exports_per_day=3),
                     starter=lambda *_: ScriptedStarter())
    CURRENT.target = app
    return Portal(app, token, export_id)




@schema.parametrize()
@SETTINGS
def test_with_a_valid_token(case: Any, portal: Portal) -> None:
    case.call_and_validate(headers=bearer(portal.token))


@schema.parametrize()
@SETTINGS
def test_without_a_token(case: Any, portal: Portal) -> None:
    response = case.call_and_validate()
    assert response.status_code in (401, 404, 405, 422), response.text


def test_a_retained_packages_answers_conform(portal: Portal) -> None:
    """Generated ids never hit a real export: the 200 and 303 answers are checked here."""
    ident = {"export_id": portal.export_id}
    calls = [("/v1/exports", "GET", {}), ("/v1/exports/{export_id}", "GET", ident),
             ("/v1/exports/{export_id}/files/{path}", "GET",
              {**ident, "path": "datapackage.json"}),
             ("/v1/exports/{export_id}/files/{path}", "GET",
              {**ident, "path": "data/members.csv"}),
             ("/v1/backups/latest", "GET", {}), ("/v1/exports", "POST", {})]
    statuses = []
    for path, method, parameters in calls:
        case = schema[path][method].Case(path_parameters=parameters or None)
        response = case.call_and_validate(headers=bearer(portal.token), allow_redirects=False)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 303, 303, 200, 202]

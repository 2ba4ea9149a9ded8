"""The portal's API over real HTTP: uvicorn on 127.0.0.1 in a thread, httpx as the client.

The whole path (request, real export against the platform, state, checksummed download through
the redirect), tenant isolation (another tenant's ids are 404, never 403), 401 for every bad
token, a link that expires on an S3 that enforces expiry, the limits (409, 429), progress, and
the Prefect starter against a test server's deployment.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn

from kernel.settings import Settings
from portal.app import create_app
from portal.config import PortalSettings
from portal.jobs import Job, JobStore
from portal.starters import InProcessStarter, RunUpdate
from storage.audit import AuditTrail
from storage.tokens import TokenStore
from tests.conftest import Platform
from tests.services import free_port, wait_for_port

FINAL = {"completed", "failed", "deleted"}


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app behind a real uvicorn server on 127.0.0.1 (its access log on, propagating to
    the root logger so tests can read it)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=True, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(response: httpx.Response, name: str) -> str:
    """The Set-Cookie header of one cookie."""
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(name + "=")]
    assert found, response.headers.get_list("set-cookie")
    return found[0]


def sign_in(client: httpx.Client, token: str, **headers: str) -> httpx.Response:
    """Sign in on the web page as a browser does: the form, then its post."""
    form = client.get("/", headers=headers)
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    return client.post("/sign-in", data={"token": token, "nonce": nonce.group(1)},
                       headers=headers)


def issue(tenant: str, contact: str, **kwargs: Any) -> str:
    store = TokenStore(Settings().resolved_control_url(), **kwargs)
    try:
        return store.issue(tenant, contact).token
    finally:
        store.close()


def wait_final(client: httpx.Client, ref: str, token: str, timeout: float = 240) -> dict[str, Any]:
    """Poll an export until it ends; every state seen on the way is kept in ``seen``."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/exports/{ref}", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen.append(body["state"])
        if body["state"] in FINAL:
            return {**body, "seen": seen}
        time.sleep(0.3)
    raise AssertionError(f"export {ref} did not end in {timeout} s: {seen[-5:]}")


@pytest.fixture
def in_process() -> PortalSettings:
    return PortalSettings(starter="in-process")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[Collect]:
    """Every record at INFO and above of the root, uvicorn's and Prefect's loggers, whatever
    their propagation (Prefect's own set-up, which replaces root handlers, is done first)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    handler = Collect()
    names = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "prefect", "prefect.extra")
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    # the test's own HTTP client logs the links it follows; that is the client, not the portal
    quiet = [(logging.getLogger(n), logging.getLogger(n).level) for n in ("httpx", "httpcore")]
    for logger, _ in quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
        for logger, level in quiet:
            logger.setLevel(level)


def test_request_to_checksummed_download(sqlite_platform: Platform, in_process: PortalSettings,
                                         logs: Collect) -> None:
    token = issue("t-1", "Anna@Example.org")
    app = create_app(Settings(), in_process)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        started = client.post("/v1/exports", headers=bearer(token), json={"excel": False})
        assert started.status_code == 202, started.text
        ref = started.json()["id"]
        assert ref.startswith("req-") and started.headers["location"] == f"/v1/exports/{ref}"
        assert started.json()["state"] in ("requested", "running", "completed")
        done = wait_final(client, ref, token)
        assert done["state"] == "completed", done
        assert done["requested_by"] == "anna@example.org" and done["failure"] is None
        listing = client.get("/v1/exports", headers=bearer(token)).json()
        assert [(e["id"], e["state"]) for e in listing["exports"]] == [(ref, "completed")]
        assert listing["exports"][0]["files"] == done["files"]
        assert listing["started_last_24h"] == 1

        files = {f["path"]: f for f in done["files"]}
        assert {"datapackage.json", "data/members.csv", "documents/index.csv",
                "documents/documents-0001.zip"} <= set(files)
        locations = []
        for path, f in files.items():
            answer = client.get(f["download"], headers=bearer(token), follow_redirects=False)
            assert answer.status_code == 303, (path, answer.text)
            assert answer.headers["cache-control"] == "no-store"
            link = answer.headers["location"]
            locations.append(link)
            fetched = httpx.get(link, timeout=60)
            assert fetched.status_code == 200, path
            assert fetched.headers["content-disposition"].startswith("attachment")
            assert len(fetched.content) == f["bytes"], path
            assert hashlib.sha256(fetched.content).hexdigest() == f["sha256"], path
        manifest = httpx.get(locations[0]).json()  # the sizes shown are the manifest's own
        for resource in manifest["resources"]:
            assert files[resource["path"]]["sha256"] == resource["hash"].removeprefix("sha256:")
            assert files[resource["path"]]["bytes"] == resource["bytes"]
        not_in_package = client.get(f"/v1/exports/{ref}/files/data/nope.csv",
                                    headers=bearer(token), follow_redirects=False)
        assert not_in_package.status_code == 404
        assert not_in_package.json()["error"] == "not_found"

    trail = AuditTrail(Settings().resolved_control_url())
    events = trail.events("t-1")
    trail.close()
    downloads = [e for e in events if e.kind == "download"]
    assert sorted(e.details["file"] for e in downloads) == sorted(files)
    assert {e.actor for e in downloads} == {"anna@example.org"}
    assert all(e.details["export_id"] == done["export_id"] for e in downloads)
    # the portal records the client's request; the run records its own start (no request id)
    assert [e.details["request_id"] for e in events
            if e.kind == "export.requested" and "request_id" in e.details] == [ref]

    logged = "\n".join(r.getMessage() for r in logs.records)
    access = [r.getMessage() for r in logs.records if r.name == "uvicorn.access"]
    assert any(f"/v1/exports/{ref}/files/data/members.csv" in line and "303" in line
               for line in access), access[-5:]
    for link in locations:  # neither the link, nor its signature, nor the token
        assert link not in logged and link.split("?", 1)[1] not in logged
    assert "X-Amz-Signature" not in logged and token not in logged


def test_another_tenants_ids_are_not_found(sqlite_platform: Platform,
                                           in_process: PortalSettings) -> None:
    token_a, token_b = issue("t-1", "a@example.org"), issue("t-2", "b@example.org")
    app = create_app(Settings(), in_process)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        ref_b = client.post("/v1/exports", headers=bearer(token_b)).json()["id"]
        done_b = wait_final(client, ref_b, token_b)
        assert done_b["state"] == "completed"
        ids_b = [ref_b, done_b["export_id"]]
        paths_b = [f["path"] for f in done_b["files"]]
        for ident in ids_b:  # they exist: tenant B reaches them
            assert client.get(f"/v1/exports/{ident}", headers=bearer(token_b)).status_code == 200
        for ident in ids_b:
            answer = client.get(f"/v1/exports/{ident}", headers=bearer(token_a))
            assert answer.status_code == 404, answer.text
            assert answer.json() == {"error": "not_found",
                                     "detail": f"no export {ident!r} for this account"}
            for path in paths_b:
                fetched = client.get(f"/v1/exports/{ident}/files/{path}",
                                     headers=bearer(token_a), follow_redirects=False)
                assert fetched.status_code == 404 and "location" not in fetched.headers
        listing_a = client.get("/v1/exports", headers=bearer(token_a)).json()
        assert listing_a["tenant_id"] == "t-1" and listing_a["exports"] == []
        traversal = client.get("/v1/exports/..%2F..%2Ft-2", headers=bearer(token_a))
        assert traversal.status_code == 404
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as browser:
        assert sign_in(browser, token_a).status_code == 303  # the web page: the same rule
        for ident in ids_b:
            page = browser.get(f"/exports/{ident}")
            assert page.status_code == 404 and "no export" in page.text
            for path in paths_b:
                fetched = browser.get(f"/exports/{ident}/files/{path}", follow_redirects=False)
                assert fetched.status_code == 404 and "location" not in fetched.headers
        assert ref_b not in browser.get("/").text


def test_revoked_expired_and_wrong_tokens_get_401(sqlite_platform: Platform,
                                                  in_process: PortalSettings) -> None:
    url = Settings().resolved_control_url()
    good = issue("t-1", "a@example.org")
    revoked_store = TokenStore(url)
    revoked = revoked_store.issue("t-1", "a@example.org")
    revoked_store.revoke(revoked.info.token_id)
    revoked_store.close()
    past = datetime.now(UTC) - timedelta(days=30)
    expired = TokenStore(url, clock=lambda: past).issue("t-1", "a@example.org", 86400).token
    prefix, token_id, secret = good.split("_", 2)
    forged = f"{prefix}_{token_id}_{'A' * len(secret)}"  # a real id, the wrong secret
    wrong = {"revoked": revoked.token, "expired": expired, "forged": forged,
             "garbage": "not-a-token", "long": "tep_" + "a" * 5000}
    app = create_app(Settings(), in_process)
    routes = ["/v1/exports", "/v1/exports/req-20261126T101500Z-3f2a9c1b",
              "/v1/exports/20261126T101500Z-3f2a/files/datapackage.json", "/v1/backups/latest"]
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/v1/exports", headers=bearer(good)).status_code == 200
        for route in routes:
            answers = {"none": client.get(route), "basic": client.get(
                route, headers={"Authorization": "Basic YTpi"}), "bare": client.get(
                route, headers={"Authorization": "Bearer"})}
            answers |= {name: client.get(route, headers=bearer(value))
                        for name, value in wrong.items()}
            answers["post"] = client.post("/v1/exports", headers=bearer(revoked.token))
            for name, answer in answers.items():
                assert answer.status_code == 401, (route, name, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert answer.json()["error"] == "unauthorized"


def publish_package(tenant: str) -> str:
    """A package made by the export recipe itself (write, verify, publish the manifest), as
    an operator's export leaves it; the portal lists it under its own id."""
    from flows import packaging
    from flows.context import RunContext
    from kernel.ids import new_export_id

    ctx = RunContext.open(Settings())
    try:
        created = datetime.now(UTC).replace(microsecond=0)
        export_id = new_export_id(created)
        records = packaging.write_package(ctx, tenant, export_id)
        packaging.verify_package(ctx, tenant, export_id, records)
        packaging.publish_manifest(ctx, tenant, export_id, created, records)
    finally:
        ctx.close()
    return export_id


@pytest.mark.s3rver
def test_a_redirects_link_expires(s3rver_platform: Platform) -> None:
    token = issue("t-1", "a@example.org")
    export_id = publish_package("t-1")
    app = create_app(Settings(), PortalSettings(starter="in-process", link_ttl_seconds=2))
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        done = client.get(f"/v1/exports/{export_id}", headers=bearer(token)).json()
        assert done["state"] == "completed" and done["id"] == export_id, done
        f = next(f for f in done["files"] if f["path"] == "documents/index.csv")
        link = client.get(f["download"], headers=bearer(token),
                          follow_redirects=False).headers["location"]
        assert "X-Amz-Expires=2" in link
        fresh = httpx.get(link)
        assert fresh.status_code == 200
        assert hashlib.sha256(fresh.content).hexdigest() == f["sha256"]
        time.sleep(3.5)  # outlive the 2-second link; no timing is asserted
        stale = httpx.get(link)
        assert stale.status_code == 403 and b"expired" in stale.content.lower()
        again = client.get(f["download"], headers=bearer(token), follow_redirects=False)
        assert again.status_code == 303 and httpx.get(again.headers["location"]).status_code == 200


class ScriptedStarter:
    """A starter whose runs do nothing until the test says how they ended."""

    name = "scripted"

    def __init__(self) -> None:
        self.started: list[Job] = []
        self.outcome: dict[str, RunUpdate] = {}

    def start(self, job: Job) -> str:
        self.started.append(job)
        return f"scripted:{len(self.started)}"

    def status(self, job: Job) -> RunUpdate | None:
        return self.outcome.get(job.request_id)


def test_one_at_a_time_and_a_daily_limit(sqlite_platform: Platform) -> None:
    token = issue("t-1", "a@example.org")
    scripted = ScriptedStarter()
    app = create_app(Settings(), PortalSettings(exports_per_day=2),
                     starter=lambda *_: scripted)
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        first = client.post("/v1/exports", headers=bearer(token)).json()["id"]
        busy = client.post("/v1/exports", headers=bearer(token))
        assert busy.status_code == 409
        assert busy.json()["error"] == "export_running" and busy.json()["export_id"] == first
        scripted.outcome[first] = RunUpdate("failed", failure="TenantBusy: locked")
        assert client.get(f"/v1/exports/{first}", headers=bearer(token)).json()["failure"] == (
            "TenantBusy: locked")
        second = client.post("/v1/exports", headers=bearer(token))
        assert second.status_code == 202
        scripted.outcome[second.json()["id"]] = RunUpdate("failed", failure="again")
        limited = client.post("/v1/exports", headers=bearer(token))
        assert limited.status_code == 429, limited.text
        wait = limited.json()["retry_after_seconds"]
        assert 86000 < wait <= 86400 and limited.headers["retry-after"] == str(wait)
        assert len(scripted.started) == 2


def test_progress_of_a_running_export(sqlite_platform: Platform) -> None:
    token = issue("t-1", "a@example.org")
    scripted = ScriptedStarter()
    app = create_app(Settings(), PortalSettings(), starter=lambda *_: scripted)
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        ref = client.post("/v1/exports", headers=bearer(token)).json()["id"]
        scripted.outcome[ref] = RunUpdate("running", started_at=datetime.now(UTC))
        staged = f"exports/t-1/{datetime.now(UTC):%Y%m%dT%H%M%SZ}-0badc0de/"
        sqlite_platform.s3.put_object(Bucket=sqlite_platform.export_bucket,
                                      Key=staged + "data/members.csv", Body=b"x" * 1234)
        sqlite_platform.s3.put_object(Bucket=sqlite_platform.export_bucket,
                                      Key=staged + "data/select.csv", Body=b"y" * 66)
        body = client.get(f"/v1/exports/{ref}", headers=bearer(token)).json()
        assert body["state"] == "running"
        assert body["progress"]["files_written"] == 2
        assert body["progress"]["bytes_written"] == 1300
        assert body["files"] == []  # an unpublished package is never offered


def test_an_in_process_run_whose_process_died_is_reported_failed(
        sqlite_platform: Platform) -> None:
    url = Settings().resolved_control_url()
    later = datetime.now(UTC) + timedelta(minutes=5)
    jobs = JobStore(url)
    job = jobs.create("t-1", "a@example.org", "0" * 16, excel=False)
    jobs.started(job.request_id, "in-process", "in-process:gone")
    jobs.running(job.request_id)
    jobs.close()
    token = issue("t-1", "a@example.org")
    app = create_app(Settings(), PortalSettings(starter="in-process"), clock=lambda: later)
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        body = client.get(f"/v1/exports/{job.request_id}", headers=bearer(token)).json()
    assert body["state"] == "failed" and body["failure"].startswith("interrupted")


def test_the_prefect_starter_runs_the_deployment(sqlite_platform: Platform) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Failed, Running

    from portal.starters import choose_starter

    name = f"portal-test-{uuid.uuid4().hex[:8]}"
    config = PortalSettings(deployment=f"offboarding_export/{name}")
    jobs = JobStore(Settings().resolved_control_url())
    assert isinstance(choose_starter(Settings(), config, jobs), InProcessStarter)
    with get_client(sync_client=True) as prefect:
        flow_id = prefect.create_flow_from_name("offboarding_export")
        deployment_id = prefect.create_deployment(flow_id=flow_id, name=name)
        try:
            assert choose_starter(Settings(), config, jobs).name == "prefect"
            token = issue("t-1", "a@example.org")
            app = create_app(Settings(), config)
            with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
                started = client.post("/v1/exports", headers=bearer(token), json={"excel": True})
                assert started.status_code == 202 and started.json()["state"] == "requested"
                ref = started.json()["id"]
                job = jobs.get("t-1", ref)
                assert job is not None and job.starter == "prefect" and job.run_ref
                run = prefect.read_flow_run(uuid.UUID(job.run_ref))
                assert run.deployment_id == deployment_id
                assert run.parameters == {"request": {"tenant_id": "t-1", "excel": True,
                                                      "link_ttl_seconds": 300}}
                prefect.set_flow_run_state(run.id, Running(), force=True)
                body: Callable[[], dict[str, Any]] = lambda: client.get(  # noqa: E731
                    f"/v1/exports/{ref}", headers=bearer(token)).json()
                assert body()["state"] == "running"
                prefect.set_flow_run_state(run.id, Failed(message="TenantBusy: t-1 is locked"),
                                           force=True)
                ended = body()
                assert ended["state"] == "failed" and "TenantBusy: t-1 is locked" in ended["failure"]
        finally:
            prefect.delete_deployment(deployment_id)
            jobs.close()


def test_the_backup_extract(sqlite_platform: Platform) -> None:
    from flows import backup
    from flows.context import RunContext
    from storage.keys import parse_master_key

    ctx = RunContext.open(Settings())
    try:
        snapshot = backup.backup_tenant(
            ctx, parse_master_key(Settings().master_key_value() or ""), "t-1").snapshot_id
    finally:
        ctx.close()
    trail = AuditTrail(Settings().resolved_control_url())
    trail.record("restore.completed", "t-1", "operator", snapshot_id=snapshot,
                 target="sqlite:///restore-test.sqlite")
    token_1, token_2 = issue("t-1", "a@example.org"), issue("t-2", "b@example.org")
    app = create_app(Settings(), PortalSettings(starter="in-process"))
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        body = client.get("/v1/backups/latest", headers=bearer(token_1)).json()
        assert body["last_backup"]["state"] == "completed"
        assert body["last_backup"]["snapshot_id"] == snapshot and body["snapshots_retained"] == 1
        assert body["last_restore_test"] == {"state": "completed", "snapshot_id": snapshot,
                                             "at": body["last_restore_test"]["at"]}
        assert "target" not in str(body) and "restore-test" not in str(body)
        other = client.get("/v1/backups/latest", headers=bearer(token_2)).json()
        assert other["tenant_id"] == "t-2" and other["last_backup"] is None
        assert other["last_restore_test"] is None and other["snapshots_retained"] == 0
        trail.record("backup.failed", "t-1", "schedule", snapshot_count=0)
        trail.record("restore.failed", "t-1", "operator", snapshot_id=snapshot)
        after = client.get("/v1/backups/latest", headers=bearer(token_1)).json()
        assert after["last_backup"]["state"] == "failed"
        assert after["last_completed_snapshot"]["snapshot_id"] == snapshot
        assert after["last_restore_test"]["state"] == "failed"
    trail.close()


def test_a_failure_line_names_refusals_but_not_internals() -> None:
    from kernel.errors import ControlDbError, TenantBusy, UnknownTenant
    from portal.starters import failure_line

    assert failure_line(UnknownTenant("unknown tenant 't-9'")) == (
        "UnknownTenant: unknown tenant 't-9'")
    assert failure_line(TenantBusy("t-1 is locked")).startswith("TenantBusy: t-1 is locked")
    hidden = failure_line(ControlDbError("cannot reach postgresql://ops@db.internal/control"))
    assert "db.internal" not in hidden and hidden.startswith("ControlDbError: ")
    assert "secret" not in failure_line(RuntimeError("password=secret"))

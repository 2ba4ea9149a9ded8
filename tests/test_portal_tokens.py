"""Contact tokens and browser sessions: the store, the operator's commands, the sign-in page
(cookies, CSRF), and `tenant-export portal` serving for real.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from kernel.errors import BadInput
from kernel.settings import Settings
from portal.app import create_app
from portal.config import PortalSettings
from storage.audit import AuditTrail
from storage.tokens import MAX_CONTACTS, TokenStore
from tenant_export.cli import app as cli
from tests import awkward
from tests.conftest import Platform
from tests.services import free_port, wait_for_port
from tests.test_portal_api import ScriptedStarter, bearer, cookie, serving, sign_in

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Any:
    tokens = TokenStore(f"sqlite:///{tmp_path / 'control.sqlite'}", clock=clock)
    yield tokens
    tokens.close()


def test_a_token_is_stored_only_as_its_hash(store: TokenStore, tmp_path: Path) -> None:
    issued = store.issue("t-1", " Anna@Example.ORG ", 3600)
    assert re.fullmatch(r"tep_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", issued.token)
    assert issued.info.contact == "anna@example.org" and issued.token not in repr(issued)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("control.sqlite*"))
    secret = issued.token.rsplit("_", 1)[1].encode()
    assert secret not in raw
    assert hashlib.sha256(issued.token.encode()).hexdigest().encode() in raw
    who = store.authenticate(issued.token)
    assert who is not None and (who.tenant_id, who.contact) == ("t-1", "anna@example.org")


def test_wrong_expired_and_revoked_tokens_are_refused(store: TokenStore, clock: Clock) -> None:
    issued = store.issue("t-1", "a@example.org", 3600)
    assert store.authenticate(issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")) is None
    assert store.authenticate("tep_0000000000000000_" + "a" * 43) is None
    assert store.authenticate(issued.token + "x") is None
    clock.now += timedelta(seconds=3599)
    assert store.authenticate(issued.token) is not None
    clock.now += timedelta(seconds=1)
    assert store.authenticate(issued.token) is None
    assert store.tokens("t-1")[0].state(clock.now) == "expired"
    other = store.issue("t-1", "a@example.org", 3600)
    store.revoke(other.info.token_id)
    assert store.authenticate(other.token) is None
    assert store.revoke(other.info.token_id).state(clock.now) == "revoked"  # again: no change


def test_at_most_two_contacts_per_tenant(store: TokenStore, clock: Clock) -> None:
    first = store.issue("t-1", "a@example.org", 3600)
    store.issue("t-1", "A@example.org", 3600)  # the same contact may hold a second token
    store.issue("t-1", "b@example.org", 7200)
    store.issue("t-2", "c@example.org", 3600)  # another tenant counts apart
    with pytest.raises(BadInput, match=f"{MAX_CONTACTS} contacts .*a@example.org, b@example.org"):
        store.issue("t-1", "c@example.org", 3600)
    for info in store.tokens("t-1"):
        if info.contact == "a@example.org":
            store.revoke(info.token_id)
    assert store.issue("t-1", "c@example.org", 3600).info.contact == "c@example.org"
    clock.now += timedelta(hours=3)  # expired tokens hold no place either
    assert store.issue("t-1", "d@example.org", 3600).info.contact == "d@example.org"
    assert first.info.token_id in {t.token_id for t in store.tokens("t-1")}


@pytest.mark.parametrize(("tenant", "contact", "ttl", "message"), [
    ("../t", "a@example.org", 60, "invalid tenant id"),
    ("t-1", "not an address", 60, "invalid contact address"),
    ("t-1", "a@b@example.org", 60, "invalid contact address"),
    ("t-1", "a@example.org\nBcc: x@y.org", 60, "invalid contact address"),
    ("t-1", "a@example.org", 0, "token lifetime"),
    ("t-1", "a@example.org", 400 * 86400, "token lifetime"),
])
def test_bad_requests_are_refused(store: TokenStore, tenant: str, contact: str, ttl: int,
                                  message: str) -> None:
    with pytest.raises(BadInput, match=message):
        store.issue(tenant, contact, ttl)
    assert store.tokens("t-1") == []


def test_sessions_end_with_their_token_or_their_time(store: TokenStore, clock: Clock) -> None:
    issued = store.issue("t-1", "a@example.org", 86400)
    who = store.authenticate(issued.token)
    assert who is not None
    session = store.open_session(who, 3600)
    assert store.session(session) == who
    assert store.session(session[:-1] + "A") is None and store.session("x") is None
    clock.now += timedelta(seconds=3601)
    assert store.session(session) is None
    again = store.open_session(who, 3600)
    store.close_session(again)
    assert store.session(again) is None
    third = store.open_session(who, 3600)
    store.revoke(issued.info.token_id)
    assert store.session(third) is None


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A platform database and a control database, nothing else (token commands run no flow)."""
    for name in list(os.environ):
        if name.startswith("TENANT_EXPORT_"):
            monkeypatch.delenv(name)
    db = tmp_path / "platform.sqlite"
    awkward.create_sqlite(str(db))
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(awkward.CATALOG)
    monkeypatch.setenv("TENANT_EXPORT_SOURCE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("TENANT_EXPORT_CATALOG", str(catalog))
    monkeypatch.setenv("TENANT_EXPORT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    return tmp_path


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_the_operator_issues_lists_and_revokes(cli_env: Path) -> None:
    issued = _cli("portal", "token", "issue", "t-1", "--contact", "Ops@Example.org", "--json")
    assert issued.exit_code == 0, issued.stderr
    doc = json.loads(issued.stdout)
    assert doc["tenant_id"] == "t-1" and doc["contact"] == "ops@example.org"
    assert doc["state"] == "active" and doc["token"].startswith(f"tep_{doc['token_id']}_")
    expires = datetime.fromisoformat(doc["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    text = _cli("portal", "token", "issue", "t-1", "--contact", "b@example.org", "--ttl", "12h")
    assert text.exit_code == 0 and "shown this once" in text.stdout
    assert re.search(r"^  tep_[0-9a-f]{16}_\S{43}$", text.stdout, re.MULTILINE)

    listed = _cli("portal", "token", "list", "t-1", "--json")
    tokens = json.loads(listed.stdout)["tokens"]
    assert sorted(t["contact"] for t in tokens) == ["b@example.org", "ops@example.org"]
    assert "token" not in tokens[0] and doc["token"] not in listed.stdout
    assert _cli("portal", "token", "list", "t-1").stdout.count("active") == 2

    revoked = _cli("portal", "token", "revoke", doc["token_id"], "--json")
    assert revoked.exit_code == 0 and json.loads(revoked.stdout)["state"] == "revoked"
    trail = AuditTrail(Settings().resolved_control_url())
    events = [(e.kind, e.details["token_id"]) for e in trail.events("t-1")]
    assert all(e.actor.startswith("operator") for e in trail.events("t-1"))
    trail.close()
    assert events[0] == ("portal.token.issued", doc["token_id"])
    assert events[-1] == ("portal.token.revoked", doc["token_id"])


@pytest.mark.parametrize(("args", "message"), [
    (["issue", "no-such-tenant", "--contact", "a@example.org"], "no-such-tenant"),
    (["issue", "t-1", "--contact", "nobody"], "invalid contact address"),
    (["issue", "t-1", "--contact", "a@example.org", "--ttl", "400d"], "at most 366 days"),
    (["issue", "t-1", "--contact", "a@example.org", "--ttl", "0"], "must be positive"),
    (["revoke", "0123456789abcdef"], "no portal token"),
    (["revoke", "../x"], "invalid token id"),
    (["list", "../x"], "invalid tenant id"),
])
def test_bad_operator_input_is_exit_2_with_one_line(cli_env: Path, args: list[str],
                                                    message: str) -> None:
    result = _cli("portal", "token", *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tenant-export: error: ")
    assert message in lines[0]


def test_a_third_contact_is_refused_by_the_command(cli_env: Path) -> None:
    for contact in ("a@example.org", "b@example.org"):
        assert _cli("portal", "token", "issue", "t-1", "--contact", contact).exit_code == 0
    third = _cli("portal", "token", "issue", "t-1", "--contact", "c@example.org")
    assert third.exit_code == 2 and "revoke one contact's tokens first" in third.stderr


def test_sign_in_cookies_and_csrf(sqlite_platform: Platform) -> None:
    store = TokenStore(Settings().resolved_control_url())
    issued = store.issue("t-1", "a@example.org")
    scripted = ScriptedStarter()
    app = create_app(Settings(), PortalSettings(), starter=lambda *_: scripted)
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and '<html lang="en">' in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        nonce_cookie = cookie(page, "portal_sign_in").lower()
        assert "httponly" in nonce_cookie and "samesite=strict" in nonce_cookie
        assert "secure" not in nonce_cookie  # plain HTTP, no TLS proxy in front

        with httpx.Client(base_url=base) as stranger:  # no sign-in cookie: login CSRF
            forged = stranger.post("/sign-in", data={"token": issued.token, "nonce": "x"})
            assert forged.status_code == 403 and "portal_session" not in forged.headers.get(
                "set-cookie", "")
        assert sign_in(client, "tep_wrong").status_code == 401

        signed = sign_in(client, issued.token)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        session = cookie(signed, "portal_session").lower()
        assert "httponly" in session and "samesite=strict" in session and "path=/" in session
        home = client.get("/")
        assert "Exports of account t-1" in home.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', home.text)
        assert csrf is not None

        assert client.post("/exports", data={"csrf": "0" * 64}).status_code == 403
        assert client.post("/exports", data={}).status_code == 403
        assert scripted.started == []
        started = client.post("/exports", data={"csrf": csrf.group(1), "excel": "true"})
        assert started.status_code == 303 and started.headers["location"].startswith(
            "/exports/req-")
        assert len(scripted.started) == 1 and scripted.started[0].excel is True
        assert client.get("/v1/exports").status_code == 401  # the cookie never opens the API

        store.revoke(issued.info.token_id)  # revoking the token ends the session
        assert "Sign in" in client.get("/").text
    store.close()


def test_cookies_are_secure_behind_tls(sqlite_platform: Platform) -> None:
    store = TokenStore(Settings().resolved_control_url())
    token = store.issue("t-1", "a@example.org").token
    store.close()
    for config, headers in ((PortalSettings(), {"X-Forwarded-Proto": "https"}),
                            (PortalSettings(secure_cookies=True), {})):
        app = create_app(Settings(), config, starter=lambda *_: ScriptedStarter())
        with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            page = client.get("/", headers=headers)
            assert "secure" in cookie(page, "__Host-portal_sign_in").lower()
            nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
            assert nonce is not None
            signed = client.post("/sign-in", headers={
                **headers, "Cookie": f"__Host-portal_sign_in={nonce.group(1)}"},
                data={"token": token, "nonce": nonce.group(1)})
            assert signed.status_code == 303
            session = cookie(signed, "__Host-portal_session").lower()
            assert "secure" in session and "httponly" in session and "samesite=strict" in session


def test_the_portal_command_serves_and_logs_no_secret(sqlite_platform: Platform,
                                                      tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    store = TokenStore(Settings().resolved_control_url())
    token = store.issue("t-1", "a@example.org").token
    store.close()
    port = free_port()
    env = {**os.environ, "TENANT_EXPORT_PORTAL_STARTER": "in-process",
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    out = (tmp_path / "portal.log").open("w+")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "tenant-export"), "portal",
                             "--port", str(port)], env=env, stdout=out,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(port, 60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            schema = client.get("/openapi.json").json()
            assert schema == json.loads((ROOT / "docs" / "portal-openapi.json").read_text())
            assert client.get("/v1/exports", headers=bearer(token)).status_code == 200
            assert client.get("/v1/exports").status_code == 401
            assert "Sign in" in client.get("/").text
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    time.sleep(0.1)
    out.seek(0)
    log = out.read()
    assert code == 0, log
    assert f"http://127.0.0.1:{port}/" in log and "exports run in-process" in log
    assert '"GET /v1/exports HTTP/1.1" 200' in log and '"GET /v1/exports HTTP/1.1" 401' in log
    assert token not in log

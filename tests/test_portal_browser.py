"""A contact's path through the web page in headless Debian Chromium (Playwright), with
JavaScript switched off (the page must work without it): sign in with the token, start an
export, refresh until it is complete, download a file and check its SHA-256.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.settings import Settings
from portal.app import create_app
from portal.config import PortalSettings
from storage.audit import AuditTrail
from storage.tokens import TokenStore
from tests.conftest import Platform
from tests.test_portal_api import serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed here (`apt-get install chromium`; "
                ".ci/run installs it)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api",
                                 reason="playwright (a dev dependency) is not installed")

pytestmark = pytest.mark.timeout(600)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def page() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        context = browser.new_context(java_script_enabled=False, accept_downloads=True)
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        try:
            yield tab
        finally:
            browser.close()


def test_a_contact_exports_and_downloads_in_the_browser(sqlite_platform: Platform, page: Any,
                                                        tmp_path: Path) -> None:
    store = TokenStore(Settings().resolved_control_url())
    token = store.issue("t-1", "anna@example.org").token
    store.close()
    app = create_app(Settings(), PortalSettings(starter="in-process"))
    with serving(app) as base:
        page.goto(base + "/")
        assert page.locator("html").get_attribute("lang") == "en"
        page.get_by_role("heading", name="Sign in").wait_for()
        page.get_by_label("Access token").fill("tep_not_a_token")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").filter(has_text="not valid").wait_for()
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Exports of account t-1").wait_for()
        assert page.get_by_text("No export yet.").count() == 1

        page.get_by_label(re.compile("Prepare the CSV files for Microsoft Excel")).check()
        page.get_by_role("button", name="Start export").click()
        page.wait_for_url(re.compile(r"/exports/req-"))
        deadline = time.monotonic() + 240
        state = ""
        while time.monotonic() < deadline:
            state = page.locator("#state").inner_text().strip()
            if not state.startswith(("requested", "running")):
                break
            time.sleep(0.5)
            page.get_by_role("link", name="Refresh").click()
        assert state == "completed", state

        row = page.get_by_role("row").filter(has_text="data/members.csv")
        shown_sha = row.locator("code").inner_text().strip()
        with page.expect_download() as caught:
            row.get_by_role("link", name="Download data/members.csv").click()
        download = caught.value
        saved = tmp_path / "members.csv"
        download.save_as(saved)
        content = saved.read_bytes()
        assert download.suggested_filename == "members.csv"
        assert content.startswith(b"\xef\xbb\xbf")  # the Excel option reached the export
        assert hashlib.sha256(content).hexdigest() == shown_sha

        page.get_by_role("link", name="Back to all exports").click()
        listing = page.get_by_role("table", name="Exports, newest first")
        assert listing.get_by_role("row").filter(has_text="completed").count() == 1
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Sign in").wait_for()

    trail = AuditTrail(Settings().resolved_control_url())
    downloads = [e for e in trail.events("t-1") if e.kind == "download"]
    trail.close()
    assert [(e.actor, e.details["file"], e.details["channel"]) for e in downloads] == [
        ("anna@example.org", "data/members.csv", "web")]

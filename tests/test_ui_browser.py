"""The operator's path through the real Prefect UI, in headless Debian Chromium (Playwright):
open the ``offboarding-export`` deployment, start a custom run through its form for a tenant,
wait for Completed, open the result artifact.

The server runs on a free port (not 4200), so the UI only works if ``PREFECT_UI_API_URL``
points it at its own API (DESIGN §6). Chromium comes from Debian (``.ci/run`` installs it);
Playwright never downloads a browser here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments import automations
from deployments.definitions import WORK_POOL
from deployments.serve import provision
from deployments.server import LocalServer
from tests.conftest import Platform
from tests.pool_helpers import Worker, running, wait_for, worker_env
from tests.services import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed here (`apt-get install chromium`; "
                ".ci/run installs it)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api",
                                 reason="playwright (a dev dependency) is not installed")

pytestmark = pytest.mark.timeout(1200)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
FINAL = re.compile(r"^(Completed|Failed|Crashed|Cancelled|TimedOut)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    local = LocalServer(port=free_port(), home=home, log=home / "server.log")
    local.start(timeout=300)
    try:
        provision(local.api_url, WORK_POOL, automations.AlertTarget())
        yield local
    finally:
        local.stop()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()


def _field(page: Any, label: re.Pattern[str]) -> Any:
    """The input of the form property whose title matches ``label`` (the UI's labels are not
    tied to their inputs, so the property's own block is found from its title)."""
    title = page.locator(".schema-form-property__label", has_text=label).first
    block = title.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), "
                          "' '), ' schema-form-property ')][1]")
    return block.locator("textarea, input").first


def test_operator_runs_an_export_from_the_ui(server: LocalServer, sqlite_platform: Platform,
                                             browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    worker = Worker("ui", worker_env(server.api_url, tmp_path / "prefect-home"), tmp_path)
    with running(worker):
        page.goto(f"{server.ui_url}/deployments")
        page.get_by_role("link", name="offboarding-export").first.click()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run").click()
        _field(page, re.compile("tenant", re.IGNORECASE)).fill("t-2")
        page.get_by_role("button", name="Submit").click()
        # the toast that confirms the run links to it (dispatched: toasts overlap and move)
        page.get_by_role("button", name="View run").first.dispatch_event("click")
        page.wait_for_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
        assert "Can't connect to Server API" not in page.content()

        badge = page.locator("header.page-heading .state-badge").first

        def final_state() -> str | None:
            text = badge.inner_text().strip() if badge.count() else ""
            return text if FINAL.match(text) else None

        state = wait_for(final_state, 600, "the run to reach a final state in the UI", 1.0)
        assert state == "Completed", f"{state}\n{worker.output()[-4000:]}"
        assert page.locator("header.page-heading").get_by_text("export-t-2").count()

        page.get_by_text("Artifacts", exact=True).first.click()
        card = page.locator(".artifact-card, a", has_text=re.compile(r"export-t-2")).first
        card.wait_for()
        card.click()
        page.wait_for_url(re.compile(r"/artifacts/artifact/"))
        page.get_by_text("datapackage.json").first.wait_for()
        page.get_by_text("documents/documents-0001.zip").first.wait_for()

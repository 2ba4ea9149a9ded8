"""No secret where it does not belong: with every credential set, none of them appears in a flow
run's parameters, state messages, artifacts or logs, in the CLI's output, or in an error; and
``repr`` of the settings and of every context object shows none."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.context import RunContext, S3Context
from kernel.settings import Settings
from storage.keys import parse_master_key
from tests.conftest import Platform
from tests.services import free_port, fresh_database

runner = CliRunner()


def _with_password(url: str, password: str) -> str:
    """The trust-auth test server accepts any password: put one in the URL."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


@pytest.fixture
def credentials(postgres_platform: Platform, postgres_url: str,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every credential the pipeline knows, each a distinctive string set in the environment."""
    found = {
        "db password": "dbpw" + secrets.token_hex(12),
        "control db password": "ctlpw" + secrets.token_hex(12),
        "restore target password": "tgtpw" + secrets.token_hex(12),
        "s3 secret key": "s3sk" + secrets.token_hex(16),
        "master key": Settings().master_key_value() or "",
        "smtp password": "smtppw" + secrets.token_hex(12),
        "signing key": base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
    }
    monkeypatch.setenv("TENANT_EXPORT_SMTP_PASSWORD", found["smtp password"])
    monkeypatch.setenv("TENANT_EXPORT_SIGNING_KEY", found["signing key"])
    monkeypatch.setenv("TENANT_EXPORT_SOURCE_URL",
                       _with_password(postgres_platform.source_url, found["db password"]))
    monkeypatch.setenv("TENANT_EXPORT_CONTROL_URL", _with_password(
        fresh_database(postgres_url, "ctl"), found["control db password"]))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", found["s3 secret key"])  # moto takes any
    found["restore target"] = _with_password(fresh_database(postgres_url, "tgt"),
                                             found["restore target password"])
    return found


def _runs_so_far() -> set[Any]:
    """Ids of the session's flow runs so far (other tests' runs are not this test's record)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found: list[Any] = []
        while page := client.read_flow_runs(limit=200, offset=len(found)):
            found.extend(page)
    return {run.id for run in found}


def _prefect_record(since: Any, earlier: set[Any]) -> list[str]:
    """Everything Prefect stored about the runs started since ``since`` that were not among
    ``earlier``, as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )

    def every(read: Any, **filters: Any) -> list[Any]:
        found: list[Any] = []
        while page := read(limit=200, offset=len(found), **filters):  # the API's page limit
            found.extend(page)
        return found

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # run logs are sent in batches
    texts: list[str] = []
    with get_client(sync_client=True) as client:
        runs = [run for run in every(client.read_flow_runs, flow_run_filter=FlowRunFilter(
            start_time=FlowRunFilterStartTime(after_=since))) if run.id not in earlier]
        assert runs, "no flow run was recorded"
        ids = [run.id for run in runs]
        for run in runs:
            texts.append(json.dumps(run.parameters, default=str))
            texts.append(run.name)
            texts.append(str(run.state.message if run.state else ""))
        for task_run in every(client.read_task_runs, flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=ids))):
            texts.append(str(task_run.state.message if task_run.state else ""))
        texts.extend(log.message for log in every(
            client.read_logs, log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))))
        for artifact in every(client.read_artifacts):
            if artifact.flow_run_id is not None and artifact.flow_run_id not in ids:
                continue  # another test's run (one asked for links in its result)
            texts.append(json.dumps(artifact.data, default=str))
            texts.append(str(artifact.description))
    return texts


def _assert_clean(texts: list[str], credentials: dict[str, str], where: str) -> None:
    for name, value in credentials.items():
        if name == "restore target":
            continue
        leaks = [t[:200] for t in texts if value in t]
        assert not leaks, f"the {name} appears in {where}: {leaks}"


@pytest.fixture
def run_logs_at_info() -> Iterator[None]:
    """The suite keeps Prefect at WARNING; here every INFO line must reach the API too."""
    from prefect.logging.configuration import setup_logging
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

    with temporary_settings(updates={PREFECT_LOGGING_LEVEL: "INFO"}):
        setup_logging(incremental=False)
        yield
    setup_logging(incremental=False)


def test_no_credential_reaches_prefect_or_the_terminal(credentials: dict[str, str],
                                                       run_logs_at_info: None) -> None:
    from datetime import UTC, datetime, timedelta

    since = datetime.now(UTC) - timedelta(seconds=1)
    earlier = _runs_so_far()
    outputs: list[str] = []

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        outputs.extend([result.stdout, result.stderr])
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result.stdout

    from tenant_export.cli import app

    exported = json.loads(cli("export", "t-1", "--json"))
    cli("links", "t-1", "--export-id", exported["export_id"], "--link-ttl", "1h", "--json")
    cli("backup", "t-1", "--json")
    cli("snapshots", "t-1")
    cli("verify", "t-1")
    restored = json.loads(cli("restore", "t-1", "--target", credentials["restore target"],
                              "--json"))
    assert restored["rows"]["members"] > 0
    cli("prune", "--dry-run")
    case = json.loads(cli("migration", "open", "t-1", "--json"))["case_id"]
    cli("migration", "log", case, "--minutes", "30", "--json")
    cli("migration", "close", case, "--json")
    cli("doctor")
    cli("keys", "rotate", "t-1", "--json")
    cli("keys", "show", "t-1", "--json")
    cli("backup", "t-1", "--json")  # under the new data key
    cli("restore", "t-1", "--in-place", "--confirm", "--json")
    today = datetime.now(UTC).date().isoformat()
    cli("offboard", "start", "t-2", "--contract-end", today, "--json")
    cli("offboard", "status", "t-2", "--json")
    cli("purge", "t-1", "--confirm", "--json")  # signs a certificate with the signing key
    cli("certificate", "public-key")
    # failures carry no credential either: an unreachable database, a bad restore target
    dead = _with_password(f"postgresql://postgres@127.0.0.1:{free_port()}/gone",
                          credentials["db password"])
    cli("restore", "t-1", "--target", dead, code=1)

    _assert_clean(outputs, credentials, "the CLI's output")
    record = _prefect_record(since, earlier)
    assert any("exporting tenant t-1" in t for t in record), "the run logs were not recorded"
    assert any("datapackage.json" in t for t in record), "the artifacts were not recorded"
    _assert_clean(record, credentials, "Prefect's record of the runs")
    links = [t for t in record if "X-Amz-Signature" in t]
    assert not links, f"a signed link is stored in Prefect: {links[0][:200]}"


def test_unreachable_platform_database_error_names_no_password(
        credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tenant_export.cli import app

    dead = _with_password(f"postgresql://postgres@127.0.0.1:{free_port()}/gone",
                          credentials["db password"])
    monkeypatch.setenv("TENANT_EXPORT_SOURCE_URL", dead)
    result = runner.invoke(app, ["export", "t-1"])
    assert result.exit_code == 1
    assert "cannot reach database" in result.stderr and "***" in result.stderr
    _assert_clean([result.stdout, result.stderr], credentials, "the error")


def test_a_password_in_a_restore_flow_parameter_is_refused(credentials: dict[str, str]) -> None:
    from flows.restore_flow import restore_backup
    from kernel.errors import BadInput

    with pytest.raises(BadInput, match="carries a password"):
        restore_backup.fn("t-1", credentials["restore target"])


def test_repr_of_settings_and_contexts_shows_no_secret(credentials: dict[str, str]) -> None:
    settings = Settings(restore_target_url=credentials["restore target"],
                        s3_access_key_id="AKIDEXAMPLE",
                        s3_secret_access_key=credentials["s3 secret key"])
    texts = [repr(settings), str(settings), settings.model_dump_json()]
    ctx = RunContext.open(settings)
    try:
        texts += [repr(ctx), str(ctx), repr(ctx.engine), repr(ctx.store)]
    finally:
        ctx.close()
    texts += [repr(S3Context.open(settings)),
              repr(parse_master_key(settings.master_key_value() or ""))]
    from flows.migration import MigrationDesk
    from flows.offboarding import CaseDesk
    from storage.ledger import Ledger

    desk = CaseDesk.open(settings)  # the stores on the control database (password in its URL)
    ledger = Ledger(settings.resolved_control_url())
    try:
        texts += [repr(desk), repr(desk.cases), repr(desk.audit), repr(ledger),
                  repr(MigrationDesk(ledger)), repr(desk.cases.__dict__),
                  repr(desk.audit.__dict__), repr(ledger.__dict__)]
    finally:
        desk.close()
        ledger.close()
    _assert_clean(texts, credentials, "a repr")

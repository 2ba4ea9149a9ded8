"""Restore targets named by a run's parameter: whoever can start a run chooses the name, so
no name may read another secret of the worker, and no refusal may quote the value it read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.targets import resolve_target
from kernel.errors import BadInput
from kernel.settings import Settings
from tests.conftest import Platform

SECRET = "c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE="


@pytest.mark.parametrize("name", ["TENANT_EXPORT_MASTER_KEY", "AWS_SECRET_ACCESS_KEY",
                                  "TENANT_EXPORT_SMTP_PASSWORD", "HOME"])
def test_a_variable_that_is_not_a_url_setting_is_refused_unread(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, SECRET)
    with pytest.raises(BadInput, match="must end in _URL") as refused:
        resolve_target(f"env:{name}", Settings())
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize("name", ["TENANT_EXPORT_CONTROL_URL", "AWS_ENDPOINT_URL_S3"])
def test_the_control_database_and_s3_are_never_targets(monkeypatch: pytest.MonkeyPatch,
                                                       name: str) -> None:
    monkeypatch.setenv(name, "sqlite:///control.sqlite")
    with pytest.raises(BadInput, match="must end in _URL"):
        resolve_target(f"env:{name}", Settings())


@pytest.mark.parametrize("value", [SECRET, "postgresql+asyncpg://u:pw-in-url@h/db", "::"])
def test_a_value_that_is_no_database_url_is_refused_without_quoting_it(
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOME_SECRET_URL", value)
    with pytest.raises(BadInput, match="does not hold a database URL") as refused:
        resolve_target("env:SOME_SECRET_URL", Settings())
    assert value not in str(refused.value) and "pw-in-url" not in str(refused.value)


def test_a_database_url_in_a_url_variable_is_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://restore:pw@db.internal/platform"
    monkeypatch.setenv("PLATFORM_RESTORE_URL", url)
    assert resolve_target("env:PLATFORM_RESTORE_URL", Settings()) == url


def test_a_prefect_secret_block_names_the_target(prefect_server: None) -> None:
    """``secret:BLOCK``: the URL lives in Prefect's Secret block, never in the run's record."""
    from prefect.blocks.system import Secret

    url = "postgresql://restore:pw-in-block@db.internal/platform"
    Secret(value=url).save("restore-target-test", overwrite=True)
    Secret(value=SECRET).save("not-a-url-test", overwrite=True)
    assert resolve_target("secret:restore-target-test", Settings()) == url
    with pytest.raises(BadInput, match="no Prefect Secret block"):
        resolve_target("secret:no-such-block", Settings())
    with pytest.raises(BadInput, match="does not hold a database URL") as refused:
        resolve_target("secret:not-a-url-test", Settings())
    assert SECRET not in str(refused.value)
    with pytest.raises(BadInput, match="not a Prefect block name"):
        resolve_target("secret:Bad Name", Settings())


def test_the_cli_takes_env_and_secret_targets(sqlite_platform: Platform, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``restore --target env:NAME`` reaches the flow as the name, resolved on its side."""
    from typer.testing import CliRunner

    from tenant_export.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["backup", "t-1"]).exit_code == 0
    target = tmp_path / "restored.sqlite"
    monkeypatch.setenv("PLATFORM_RESTORE_URL", f"sqlite:///{target}")
    done = runner.invoke(app, ["restore", "t-1", "--target", "env:PLATFORM_RESTORE_URL",
                               "--json"])
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["rows"]["members"] > 0 and target.exists()
    refused = runner.invoke(app, ["restore", "t-1", "--target", "env:HOME"])
    assert refused.exit_code == 2 and "ending in _URL" in refused.stderr, refused.stderr


def _card(kind: str, tenant: str) -> str:
    """The newest markdown of a run's result card."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from kernel.ids import artifact_key

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(kind,
                                                                                  tenant)])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, (kind, tenant)
    return str(found[0].data)


def test_verify_and_restore_runs_end_with_a_readable_result(
        sqlite_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flows.restore_flow import restore_backup, verify_backup
    from tenant_export.cli import app

    assert CliRunner().invoke(app, ["backup", "t-1"]).exit_code == 0
    verified = verify_backup("t-1")
    card = _card("verify", "t-1")
    assert "completed" in card and verified["snapshot_id"] in card
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="never a run parameter"):  # before the run
        restore_backup("t-1", f"sqlite:///{tmp_path / 'r.sqlite'}")
    monkeypatch.setenv("CARD_RESTORE_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    restore_backup("t-1", "env:CARD_RESTORE_URL")
    card = _card("restore", "t-1")
    assert "completed" in card and "| `members` |" in card and "r.sqlite" in card
    with pytest.raises(BadInput):
        restore_backup("t-1", "env:NOT_SET_ANYWHERE_URL")
    card = _card("restore", "t-1")
    assert "refused" in card and "is not set where the flow runs" in card

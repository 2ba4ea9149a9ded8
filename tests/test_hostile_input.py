"""Issue 8: hostile input over the whole CLI surface, enumerated from the Typer app.

Every command and every parameter that takes a value is fed each class of bad value below
(wrong types, overflows, far dates, NULs, empty and very long strings, path traversal, an
unsupported database driver), the other required parameters getting a legitimate value. Each
answer must keep the contract of DESIGN §3.1: exit 2 with exactly one line on stderr starting
with ``tenant-export: error:`` (or Typer's own usage error, also exit 2), never a traceback,
never "unexpected". A value that is legitimately fine for a parameter may pass (exit 0, or 1
with one clear line where the environment says no); classes a parameter must refuse are refused
*before any flow runs*.

Commands added later are covered without touching this file: a parameter this file does not
know gets a legitimate value from its type, and the classes every parameter must refuse.
Nothing real runs: calling a Prefect flow, listening on a socket or starting a process stops
the command (it is reported as "reached ..." and counted as passing validation).
"""

from __future__ import annotations

import os
import socket
import subprocess
import types
import typing
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from billing.tz import BERLIN
from kernel.errors import BadInput
from kernel.timeparse import parse_day, parse_instant, parse_link_ttl
from tenant_export.cli import app

MARKER = "hostile-test-reached"

HOSTILE: dict[str, str] = {
    "word": "notanumber",
    "fraction": "1.5",
    "zero": "0",
    "negative": "-1",
    "overflow": "9" * 30,
    "negative-overflow": "-" + "9" * 30,
    "exponent": "1e400",
    "huge-exponent": "1e999999999",  # int() of it runs for minutes
    "far-future": "9999-12-31T23:59:59-05:00",
    "far-past": "0001-01-01T00:00:00+05:00",
    "far-day": "9999-12-31",
    "empty": "",
    "blank": "   ",
    "traversal": "../../x",
    "sql": "t-1'; DROP TABLE tenants; --",
    "async-url": "postgresql+asyncpg://app:secret@localhost/platform",
    "nul": "t-1\x00x",
    "control": "t-1\nx",
    "surrogate": "t-\udcff",
    "long": "x" * 5000,
    "huge": "y" * 1_000_000,
}
UNIVERSAL = frozenset({"nul", "control", "surrogate", "long", "huge"})
"""Refused for every parameter of every command (the CLI's argument check)."""

ID_LIKE = frozenset({"word", "zero", "overflow", "exponent", "huge-exponent", "far-day"})
TENANT_LIKE = ID_LIKE | {"fraction"}
MAY_PASS: dict[str, frozenset[str]] = {
    # parameter name (option flag, or argument name) -> classes that are legitimately fine;
    # every other class must be refused before any flow. Names not listed here: only the
    # UNIVERSAL classes must be refused.
    "--minutes": frozenset(), "--port": frozenset(), "--kind": frozenset(),
    "--at": frozenset(), "--start": frozenset(), "--on": frozenset(),
    "--received": frozenset(), "--hours": frozenset({"fraction"}),
    "--link-ttl": frozenset(), "--export-id": frozenset(), "--target": frozenset(),
    "--tenant": frozenset(),  # demo: one of the demo tenants
    "--note": frozenset(HOSTILE) - UNIVERSAL,
    "--entry-id": ID_LIKE, "--reverses": ID_LIKE, "case": ID_LIKE, "booking": ID_LIKE,
    "tenant": TENANT_LIKE, "tenants": TENANT_LIKE,
}


def _legit(now: datetime, tmp: Path) -> dict[str, str]:
    berlin = now.astimezone(BERLIN)
    start = (berlin + timedelta(days=10)).replace(hour=10, minute=0, second=0, microsecond=0)
    return {
        "tenant": "t-1", "tenants": "t-1", "--tenant": "harbour-rowing",
        "case": "M-20261126-00000000", "booking": "B-20261126-00000000",
        "--minutes": "30", "--kind": "work", "--note": "a note", "--entry-id": "w-1",
        "--reverses": "w-1", "--on": berlin.date().isoformat(),
        "--at": (berlin - timedelta(hours=1)).isoformat(timespec="seconds"),
        "--start": start.isoformat(), "--received": "2026-11-26T10:00:00+01:00",
        "--hours": "2", "--link-ttl": "15m", "--export-id": "20261126T101500Z-3f2a",
        "--snapshot": "20261126T023000Z-1a2b3c4d", "--target": f"sqlite:///{tmp}/target.sqlite",
        "--documents-bucket": "restored-documents", "--port": "8080",
        "--anchor": "1:" + "0" * 64, "--contact": "ops@example.org",
    }


ROOT = typer.main.get_command(app)
"""The app as a click command, built once (Typer rebuilds it per invoke: 85 ms each)."""


def _commands() -> dict[str, tuple[list[str], Any]]:
    """Every leaf command of the app by its path (``migration log``), found by walking it."""
    found: dict[str, tuple[list[str], Any]] = {}

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = (path, command)

    walk(ROOT, [])
    return found


COMMANDS = _commands()


def _name(param: Any) -> str:
    opts = getattr(param, "opts", None) or []
    long = [o for o in opts if o.startswith("--")]
    return long[0] if long else str(param.name)


def _takes_value(param: Any) -> bool:
    return not (getattr(param, "is_flag", False) or getattr(param, "count", False))


def _annotation(param: Any) -> Any:
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", str)
    while typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _fallback(param: Any, tmp: Path) -> str:
    """A legitimate value for a parameter this file does not name, from its type."""
    annotation = _annotation(param)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return str(next(iter(annotation)).value)
    if annotation is int:
        return str(getattr(param, "min", None) or 1)
    if annotation is Path:
        existing = tmp / "input.json"
        existing.write_text("{}")
        return str(existing)
    return "t-1"


def _arguments(params: list[Any], hostile: Any, value: str, legit: dict[str, str],
               tmp: Path) -> list[str]:
    """Options first, then ``--`` and the positionals in order (so ``-1`` stays a value)."""
    options: list[str] = []
    positionals: list[str] = []
    for param in params:
        if param is hostile:
            given = value
        elif getattr(param, "required", False) and _takes_value(param):
            given = legit.get(_name(param)) or _fallback(param, tmp)
        else:
            continue
        if getattr(param, "opts", [""])[0].startswith("-"):
            options += [_name(param), given]
        else:
            positionals.append(given)
    return options + (["--", *positionals] if positionals else [])


class Reached(BadInput):
    """Raised where the real work would begin: the input passed every check."""


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private environment in which nothing real can run (no flow, server or process)."""
    from prefect.flows import Flow

    from tests import awkward

    def reached(what: str) -> Any:
        def stop(*_args: Any, **_kwargs: Any) -> Any:
            raise Reached(f"{MARKER}: {what}")
        return stop

    monkeypatch.setattr(Flow, "__call__", reached("a Prefect flow"))
    # Prefect's logging setup takes 0.1 s per command in-process; it is not under test here
    monkeypatch.setattr("tenant_export.logs.quiet_console", lambda _debug: None)
    monkeypatch.setattr("typer.testing._get_command", lambda _app: ROOT)
    monkeypatch.setattr(socket.socket, "listen", reached("a listening socket"))
    # moto's server listens in a thread and would wait for it forever: stop at its start
    monkeypatch.setattr("moto.server.ThreadedMotoServer.start", reached("a listening socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", reached("a new process"))
    platform = tmp_path / "platform.sqlite"
    awkward.create_sqlite(str(platform))
    for name in list(os.environ):
        if name.startswith("TENANT_EXPORT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TENANT_EXPORT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TENANT_EXPORT_SOURCE_URL", f"sqlite:///{platform}")
    monkeypatch.setenv("TENANT_EXPORT_LOCAL_SERVER_IDLE", "0")  # no kept server: a flow call stops
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # discard: nothing leaves
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    work = tmp_path / "a" / "b" / "c"  # "../../x" stays inside tmp_path
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return tmp_path


def _verdict(result: Any, must_refuse: bool) -> str | None:
    """What is wrong with one answer, or None."""
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"raised {type(result.exception).__name__}: {result.exception}"
    if "Traceback" in err or "Traceback" in result.stdout:
        return "printed a traceback"
    if "unexpected" in err:
        return f"unexpected error: {err.strip()[:200]}"
    usage = err.startswith("Usage:") and result.exit_code == 2
    if result.exit_code != 0 and not usage:
        lines = err.splitlines()
        if len(lines) != 1 or not lines[0].startswith("tenant-export: error: "):
            return f"exit {result.exit_code} without one error line: {err[:300]!r}"
    if must_refuse:
        if result.exit_code != 2:
            return f"exit {result.exit_code}, expected 2: {err.strip()[:200]}"
        if MARKER in err:
            return f"passed validation: {err.strip()[:200]}"
    elif result.exit_code not in (0, 1, 2):
        return f"exit {result.exit_code}"
    return None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_value_of_every_option_is_refused_cleanly(sandbox: Path, command: str) -> None:
    path, cli_command = COMMANDS[command]
    params = [p for p in cli_command.params if _takes_value(p)]
    legit = _legit(datetime.now(UTC), sandbox)
    runner = CliRunner()
    problems: list[str] = []
    for param in params:
        name = _name(param)
        may_pass = MAY_PASS.get(name, frozenset(HOSTILE) - UNIVERSAL)
        for label, value in HOSTILE.items():
            args = [*path, *_arguments(params, param, value, legit, sandbox)]
            result = runner.invoke(app, args)
            problem = _verdict(result, must_refuse=label not in may_pass)
            if problem:
                problems.append(f"{command} {name}={label}: {problem}")
    assert not problems, "\n".join(problems)


def test_the_enumeration_sees_every_command() -> None:
    for expected in ("export", "links", "backup", "restore", "verify", "serve", "demo",
                     "migration log", "migration book", "migration no-show", "sla due"):
        assert expected in COMMANDS
    assert all(len(path) >= 1 for path, _ in COMMANDS.values())


BAD_URLS = {
    "async driver": "postgresql+asyncpg://app:secret@localhost/platform",
    "async sqlite": "sqlite+aiosqlite:///x.sqlite",
    "other database": "mysql://app:secret@localhost/platform",
    "not a url": "platform.sqlite",
}


def test_an_unusable_database_url_is_refused_before_any_flow(
        sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TENANT_EXPORT_SOURCE_URL and _CONTROL_URL, for every command that runs a flow."""
    legit = _legit(datetime.now(UTC), sandbox)
    runner = CliRunner()
    flow_commands = []
    for name, (path, command) in COMMANDS.items():
        args = [*path, *_arguments([p for p in command.params if _takes_value(p)], None, "",
                                   legit, sandbox)]
        if "a Prefect flow" in runner.invoke(app, args).stderr:
            flow_commands.append((name, args))
    # (migration log answers without a flow since issue 13: it opens only the control database)
    assert {"export", "migration close"} <= {n for n, _ in flow_commands}
    problems = []
    for variable in ("TENANT_EXPORT_SOURCE_URL", "TENANT_EXPORT_CONTROL_URL"):
        good = os.environ.get(variable)
        for label, url in BAD_URLS.items():
            monkeypatch.setenv(variable, url)
            for name, args in flow_commands:
                result = runner.invoke(app, args)
                problem = _verdict(result, must_refuse=True)
                if problem is None and variable not in result.stderr:
                    problem = f"does not name {variable}: {result.stderr.strip()}"
                if problem is None and "secret" in result.stderr:
                    problem = "shows the password"
                if problem:
                    problems.append(f"{name} with {variable}={label}: {problem}")
        if good is None:
            monkeypatch.delenv(variable)
        else:
            monkeypatch.setenv(variable, good)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("label", sorted(set(HOSTILE) - {"far-day"}))
def test_time_parsers_refuse_every_class_in_one_short_line(label: str) -> None:
    for parse in (lambda text: parse_instant(text, "--at"), lambda text: parse_day(text, "--on"),
                  parse_link_ttl):
        with pytest.raises(BadInput) as caught:
            parse(HOSTILE[label])
        assert len(str(caught.value)) < 200 and "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["9" * 4400, "0" * 5000 + "1" * 20, "1" + "0" * 20 + "d"])
def test_a_duration_of_thousands_of_digits_is_refused_not_converted(text: str) -> None:
    # int() refuses more than 4300 digits with ValueError: that was "unexpected", exit 1
    with pytest.raises(BadInput, match="7 days"):
        parse_link_ttl(text)


def test_an_instant_past_9999_in_utc_is_out_of_range_not_an_overflow() -> None:
    for text in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00",
                 "2200-01-01T00:00:01+00:00", "1969-12-31T23:59:59+00:00"):
        with pytest.raises(BadInput, match=r"outside 1970\.\.2199"):
            parse_instant(text, "--at")


def test_leading_zeros_do_not_make_a_duration_long() -> None:
    assert parse_link_ttl("0" * 5000 + "1") == 1

"""The Typer application and what every command shares: the exit-status contract, settings
resolved once, one clear error line.

Exit status: 0 success, 2 bad input, 1 failure. Errors are one line on stderr; ``--debug`` adds
the traceback. Nothing heavy is imported before a command needs it: the command modules load
Prefect, the flows, SQLAlchemy, pyarrow and boto3 inside the bodies that use them, and this one
the settings (pydantic-settings) when a command resolves them, so ``--help`` loads only Typer
and a quick command only what it reads with (``tests/test_cli_quick.py`` keeps it so). Bad
input (every argument, the configured database URLs, a command's own ``check``) is refused
before Prefect is imported: no flow runs for a request that cannot succeed.

Commands that only read, or only append to the control database (``snapshots``, ``links``, the
migration ledger commands, ``sla due``, ``audit``...), run no flow: ``run(..., flows=False)``.

Flows run on the configured Prefect server (``PREFECT_API_URL``); without one, on a local
server kept between commands (:mod:`tenant_export.localserver`), started when a command calls
its first flow, instead of a temporary server inside every process.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import traceback
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from kernel.errors import BadInput, ExportError
from kernel.timeparse import parse_duration, shown

if TYPE_CHECKING:
    from pydantic import ValidationError

    from kernel.settings import Settings
    from tenant_export.localserver import Lease

MAX_ARGUMENT_CHARS = 4096
"""No argument of this CLI is longer (4096 is also PATH_MAX): more is a paste gone wrong."""
MAX_MESSAGE_CHARS = 1000
LOCAL_SERVER_IDLE = "TENANT_EXPORT_LOCAL_SERVER_IDLE"
"""How long the kept local Prefect server may idle (a duration); ``0``: keep none."""
DEFAULT_LOCAL_SERVER_IDLE_SECONDS = 15 * 60


def check_argument(arg: str) -> str:
    """``arg`` unchanged, or ``BadInput``: every argument of every command is one line of text.

    Refused everywhere, whatever the command: NUL and other control characters (a NUL cannot
    reach a PostgreSQL text value nor a file name), bytes that were not UTF-8 (Python hands them
    over as lone surrogates, which no encoder accepts), and more than MAX_ARGUMENT_CHARS.
    """
    if len(arg) > MAX_ARGUMENT_CHARS:
        raise BadInput(f"invalid argument {shown(arg, 30)}: more than {MAX_ARGUMENT_CHARS} "
                       "characters")
    for char in arg:
        category = unicodedata.category(char)
        if category == "Cs":
            raise BadInput(f"invalid argument {shown(arg)}: not valid UTF-8")
        if category == "Cc":
            raise BadInput(f"invalid argument {shown(arg)}: contains the control character "
                           f"U+{ord(char):04X}")
    return arg


class _CheckedGroup(TyperGroup):
    """The root command: sees every argument of every subcommand before any is parsed."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            for arg in args:
                check_argument(arg)
        except BadInput as err:
            fail(err, 2)
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="tenant-export",
    help="Tenant data export and offboarding: CSV + ZIP packages on S3 behind signed links.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_CheckedGroup,
)
_state: dict[str, bool] = {"debug": False}

TtlOption = Annotated[
    str, typer.Option("--link-ttl", help="Link lifetime: seconds or 90s/15m/12h/7d (max 7d).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
PortOption = Annotated[int, typer.Option("--port", min=1, max=65535,
                                         help="TCP port to listen on (1-65535).")]
"""Every command that listens (``serve``, ``portal``): a wrong port is a usage error, exit 2."""
T = TypeVar("T")


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def fail(err: BaseException, code: int) -> NoReturn:
    """One line on stderr (a traceback too with ``--debug``), then exit with ``code``."""
    if _state["debug"]:
        traceback.print_exception(err)
    text = str(err) or type(err).__name__
    message = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(message) > MAX_MESSAGE_CHARS:
        message = f"{message[:MAX_MESSAGE_CHARS]}..."
    typer.echo(f"tenant-export: error: {message}", err=True)
    raise typer.Exit(code)


def resolve_settings() -> Settings:
    """The settings of this process, resolved once (bad values are bad input, exit 2)."""
    from pydantic import ValidationError  # noqa: PLC0415 - pydantic-settings: not for --help

    from kernel.settings import Settings  # noqa: PLC0415

    try:
        return Settings()
    except ValidationError as err:
        _bad_setting(err)


def _bad_setting(err: ValidationError) -> NoReturn:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or err.title
    fail(BadInput(f"invalid {where}: {first['msg']}"), 2)


def check_database_urls(settings: Settings) -> None:
    """Refuse an unusable source or control database URL before any flow needs it.

    Raises:
        BadInput: a URL that does not parse, or a driver we do not ship (``+asyncpg``).
    """
    from kernel.dburl import normalize_url  # noqa: PLC0415 - SQLAlchemy: not for --help

    for name, url in (("TENANT_EXPORT_SOURCE_URL", settings.resolved_source_url()),
                      ("TENANT_EXPORT_CONTROL_URL", settings.resolved_control_url())):
        try:
            normalize_url(url)
        except BadInput as err:
            raise BadInput(f"{name}: {err}") from err


def local_server_idle() -> int:
    """Seconds the kept local Prefect server may idle, from ``TENANT_EXPORT_LOCAL_SERVER_IDLE``
    (``0``: none is kept, every command starts Prefect's temporary server as before).

    Raises:
        BadInput: not a duration.
    """
    text = os.environ.get(LOCAL_SERVER_IDLE, "").strip()
    if not text:
        return DEFAULT_LOCAL_SERVER_IDLE_SECONDS
    if set(text.rstrip("smhd").strip()) == {"0"}:  # 0, 0s, 00m: keep none
        return 0
    try:
        return parse_duration(text)
    except BadInput as err:
        raise BadInput(f"{LOCAL_SERVER_IDLE}: {err}") from err


def _span(seconds: int) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@contextmanager
def _prefect_api(state_dir: Path, idle: int) -> Iterator[None]:
    """The configured Prefect server, else the kept local one (said once on stderr when this
    command starts it)."""
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415 - env, profile or test harness

    if PREFECT_API_URL.value() or idle == 0:
        yield
        return

    def announce(lease: Lease) -> None:
        typer.echo(f"started a local Prefect server on {lease.server.ui_url} (stops after "
                   f"{_span(idle)} idle); set PREFECT_API_URL to use yours", err=True)

    with _flows_on_kept_server(state_dir, idle, announce):
        yield


@contextmanager
def _flows_on_kept_server(state_dir: Path, idle: int, announce: Callable[[Lease], None]
                          ) -> Iterator[None]:
    """Run every flow called in the block on the kept server, found or started at the first
    call and held until the block ends.

    Not before the first call: a body refuses bad input before it calls a flow, and a refused
    command must not wait for a server (``serve`` calls none: it starts its own). Prefect has
    no hook for "a flow is about to run", so ``Flow.__call__`` is wrapped for the block; each
    call gets the URL in its own settings context, so flows started in other threads (the
    portal's) use it too.
    """
    from prefect.flows import Flow  # noqa: PLC0415
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    original = Flow.__call__
    leases = ExitStack()
    guard = threading.Lock()
    found: list[str] = []

    def api_url() -> str:
        with guard:
            if not found:
                from tenant_export.localserver import use_server  # noqa: PLC0415 - only now

                lease = leases.enter_context(use_server(state_dir, idle))
                if lease.started:
                    announce(lease)
                found.append(lease.server.api_url)
            return found[0]

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        with temporary_settings(updates={PREFECT_API_URL: api_url()}):
            return original(self, *args, **kwargs)

    Flow.__call__ = call  # type: ignore[method-assign] # restored below
    try:
        with leases:
            yield
    finally:
        Flow.__call__ = original  # type: ignore[method-assign] # the class's own again


def run(action: Callable[[Settings], T], *, flows: bool = True,
        check: Callable[[Settings], object] | None = None) -> T:
    """Run a command body with the resolved settings, mapping errors to exit statuses.

    ``flows=False`` for commands that run no flow: they skip importing Prefect (seconds).
    ``check`` refuses bad input before Prefect is imported; a command that runs flows also has
    its database URLs checked first. Its flows use the configured Prefect server, else the
    kept local one (started when the body calls its first flow).
    """
    from pydantic import ValidationError  # noqa: PLC0415 - loaded by resolve_settings anyway

    settings = resolve_settings()
    try:
        if flows:
            check_database_urls(settings)
            idle = local_server_idle()
        if check is not None:
            check(settings)
        if not flows:
            return action(settings)
        import prefect  # noqa: F401, PLC0415 - installs Prefect's console handler

        from flows.context import using  # noqa: PLC0415
        from tenant_export.logs import quiet_console  # noqa: PLC0415

        quiet_console(_state["debug"])
        with _prefect_api(settings.state_dir, idle), using(settings):
            return action(settings)
    except BadInput as err:
        fail(err, 2)
    except ExportError as err:
        fail(err, 1)
    except ValidationError as err:  # a form value out of range
        _bad_setting(err)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, exit 1
        if type(err).__name__ == "ParameterTypeError":  # a flow's own form refused a value
            reasons = " ".join(str(err).split())
            fail(BadInput(reasons.removeprefix("Flow run received invalid parameters: - ")), 2)
        fail(RuntimeError(f"unexpected {type(err).__name__}: {err}"), 1)


def echo(result: Any, as_json: bool) -> None:
    """A result as JSON, or one ``key: value`` (or item) per line."""
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    elif isinstance(result, list):
        for item in result:
            typer.echo(item if isinstance(item, str) else json.dumps(item, default=str))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")

"""The Typer application and what every command shares: the exit-status contract, settings
resolved once, one clear error line.

Exit status: 0 success, 2 bad input, 1 failure. Errors are one line on stderr; ``--debug`` adds
the traceback. Prefect is imported lazily so ``--help`` and input errors stay fast.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from kernel.errors import BadInput, ExportError
from kernel.settings import Settings

app = typer.Typer(
    name="tenant-export",
    help="Tenant data export and offboarding: CSV + ZIP packages on S3 behind signed links.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state: dict[str, bool] = {"debug": False}

TtlOption = Annotated[
    str, typer.Option("--link-ttl", help="Link lifetime: seconds or 90s/15m/12h/7d (max 7d).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
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
    message = str(err) or type(err).__name__
    typer.echo(f"tenant-export: error: {message}", err=True)
    raise typer.Exit(code)


def resolve_settings() -> Settings:
    """The settings of this process, resolved once (bad values are bad input, exit 2)."""
    try:
        return Settings()
    except ValidationError as err:
        _bad_setting(err)


def _bad_setting(err: ValidationError) -> NoReturn:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or err.title
    fail(BadInput(f"invalid {where}: {first['msg']}"), 2)


def run(action: Callable[[Settings], T], *, flows: bool = True) -> T:
    """Run a command body with the resolved settings, mapping errors to exit statuses.

    ``flows=False`` for commands that run no flow: they skip importing Prefect (seconds).
    """
    if flows:
        import prefect  # noqa: F401, PLC0415 - installs Prefect's console handler, which we tune

        from tenant_export.logs import quiet_console  # noqa: PLC0415

        quiet_console(_state["debug"])
    settings = resolve_settings()
    try:
        if not flows:
            return action(settings)
        from flows.context import using  # noqa: PLC0415 - imports Prefect

        with using(settings):
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

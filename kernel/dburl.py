"""Database URLs and driver errors, shared by the platform reader, restores and the control DB."""

from __future__ import annotations

import sqlite3

from sqlalchemy import make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

from kernel.errors import BadInput

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
TARGET_NAME_PATTERN = r"^(env:[A-Za-z_][A-Za-z0-9_]{0,123}_URL|secret:[a-z0-9][a-z0-9-]{0,62})$"
"""A restore target named without its URL: a variable of the worker ending in ``_URL``, or a
Prefect Secret block: the only forms a run parameter may take."""


def normalize_url(url: str) -> URL:
    """Parse a SQLAlchemy URL; plain ``postgresql://`` means the psycopg 3 driver we ship.

    Any other driver is refused here as bad input, before it can fail deep inside SQLAlchemy.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError) as err:
        raise BadInput(f"invalid database URL {_masked(url)}: {err}") from err
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise BadInput(f"unsupported database {backend!r} in {_masked(url)}: use sqlite:/// or "
                       "postgresql://")
    if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise BadInput(f"unsupported PostgreSQL driver {parsed.get_driver_name()!r}: use "
                       "postgresql:// (psycopg 3)")
    if backend == "sqlite" and parsed.get_driver_name() != "pysqlite":
        raise BadInput(f"unsupported SQLite driver {parsed.get_driver_name()!r}: use sqlite:///")
    return parsed


def _masked(url: str) -> str:
    """A URL that failed to parse, with anything between ``//`` and ``@`` hidden."""
    if not isinstance(url, str):
        return repr(type(url).__name__)
    head, sep, rest = url.partition("//")
    if sep and "@" in rest:
        return f"{head}//***@{rest.rsplit('@', 1)[1]}"
    return url


def describe_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    parsed = url if isinstance(url, URL) else normalize_url(url)
    secret = {k: "***" for k in parsed.query if "pass" in k.lower() or "secret" in k.lower()}
    return parsed.update_query_dict(secret).render_as_string(hide_password=True)


def has_password(url: str) -> bool:
    """Whether a URL carries a credential (which must never become a flow parameter)."""
    parsed = normalize_url(url)
    return bool(parsed.password) or any(
        "pass" in k.lower() or "secret" in k.lower() for k in parsed.query)


def driver_errors() -> tuple[type[BaseException], ...]:
    """Errors the database drivers raise (SQLite, psycopg), for translation at the boundary."""
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, UnicodeDecodeError)
    try:
        import psycopg  # noqa: PLC0415 - optional at import time

        errors += (psycopg.Error,)
    except ImportError:  # pragma: no cover - psycopg ships with the project
        pass
    return errors


def error_reason(err: BaseException) -> str:
    """The first line of a driver or SQLAlchemy error, without the statement it ran."""
    inner = getattr(err, "orig", None) or err
    text = str(inner).strip()
    return text.splitlines()[0] if text else type(inner).__name__

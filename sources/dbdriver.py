"""How the platform database's drivers meet the rest: their errors as ours, and parameters
inlined as literals where a statement takes none (PostgreSQL's ``COPY ... TO STDOUT``).

Split from :mod:`sources.database` (the snapshot) so the Arrow readers can raise the same
errors without importing the snapshot.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from kernel.errors import SourceUnavailable, TransientError


class TransientSourceError(TransientError, SourceUnavailable):
    """The database connection failed mid-read (restart, network); a retry may succeed."""


class NotForArrow(Exception):
    """Why a table is read as tuples (not an error: the reason is recorded)."""


def inline_params(conn: Any, tail: str, params: Sequence[object]) -> str:
    """``%s`` markers replaced by literals psycopg quotes for this connection, and ``%%``
    (a ``%`` in an identifier, doubled for the driver) made ``%`` again."""
    from psycopg import sql  # noqa: PLC0415 - only needed for PostgreSQL

    values = iter(params)
    out: list[str] = []
    for piece in re.split(r"(%%|%s)", tail):
        if piece == "%%":
            out.append("%")
        elif piece == "%s":
            value = next(values, _MISSING)
            if value is _MISSING:
                raise NotForArrow(f"more markers than the {len(params)} parameters")
            out.append(sql.Literal(value).as_string(conn))
        else:
            out.append(piece)
    if next(values, _MISSING) is not _MISSING:
        raise NotForArrow(f"fewer markers than the {len(params)} parameters")
    return "".join(out)


_MISSING = object()


def translate_error(err: BaseException, what: str) -> SourceUnavailable:
    """A driver error as ours: connection trouble may pass (retry), the rest will not."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    transient = type(err).__name__ in ("OperationalError", "InterfaceError") and not (
        "decode" in reason or "no such" in reason)
    if transient and not isinstance(err, sqlite3.Error):
        return TransientSourceError(f"reading {what}: {reason}")
    if isinstance(err, sqlite3.OperationalError) and "locked" in reason:
        return TransientSourceError(f"reading {what}: {reason}")
    return SourceUnavailable(f"reading {what}: {reason}")

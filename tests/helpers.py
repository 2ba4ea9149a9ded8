"""Client-side helpers: download through links, parse the package, decode values by schema."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import sqlite3
import struct
import urllib.error
import urllib.request
import zipfile
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from tests.csvparse import parse


def download(url: str) -> tuple[int, bytes, dict[str, str]]:
    """A plain HTTP GET, as a client's browser or curl would do it."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def fetch_package(result: dict[str, Any]) -> dict[str, bytes]:
    """Every file of an export through its link, checked against the advertised size and hash."""
    files: dict[str, bytes] = {}
    for f in result["files"]:
        status, body, _ = download(f["url"])
        assert status == 200, (f["path"], status, body[:200])
        assert len(body) == f["bytes"], f["path"]
        assert hashlib.sha256(body).hexdigest() == f["sha256"], f["path"]
        files[f["path"]] = body
    return files


def read_table(files: dict[str, bytes], resource: dict[str, Any]) -> tuple[list[str], list[list[str | None]]]:
    text = files[resource["path"]].decode("utf-8")
    rows = parse(text)
    return [h or "" for h in rows[0]], rows[1:]


def decode(field: dict[str, Any], text: str | None, backend: str) -> Any:
    if text is None:
        return None
    kind = field["type"]
    source = field.get("x-source-type", "").upper()
    if field.get("format") == "binary":
        return base64.b64decode(text, validate=True)
    if kind == "integer":
        return int(text)
    if kind == "number":
        if backend == "postgresql" and source.startswith(("NUMERIC", "DECIMAL")):
            return Decimal(text)
        if "integer" in field.get("x-sqlite-storage-classes", []) and not any(
                marker in text.lower() for marker in (".", "e", "inf", "nan")):
            return int(text)  # an integer stored in a NUMERIC column mixing integers and reals
        return float(text)
    if kind == "boolean":
        return {"true": True, "false": False}[text]
    if kind == "datetime":
        return datetime.fromisoformat(text)
    if kind == "date":
        return date.fromisoformat(text)
    if kind == "time":
        return time.fromisoformat(text)
    if kind == "any" and backend == "postgresql":
        return json.loads(text)
    return text


def decode_mixed(text: str | None, storage: str | None) -> Any:
    """A value of a mixed SQLite column from its text and its companion storage class."""
    if storage is None:
        assert text is None
        return None
    assert text is not None
    return {"integer": int, "real": float, "text": str,
            "blob": lambda t: base64.b64decode(t, validate=True)}[storage](text)


def same(expected: Any, actual: Any, field: dict[str, Any]) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    source = field.get("x-source-type", "").upper()
    if isinstance(expected, float):
        if not isinstance(actual, float):
            return False
        if source == "REAL" and field["type"] == "number" and "x-sqlite-storage-classes" not in field:
            pack = "<f" if _is_pg_real(field) else "<d"
            return struct.pack(pack, expected) == struct.pack(pack, actual)
        return struct.pack("<d", expected) == struct.pack("<d", actual) or (
            math.isnan(expected) and math.isnan(actual))
    if isinstance(expected, Decimal):
        return isinstance(actual, Decimal) and str(expected) == str(actual)
    if isinstance(expected, datetime):
        return isinstance(actual, datetime) and expected == actual and (
            (expected.tzinfo is None) == (actual.tzinfo is None))
    return type(expected) is type(actual) and expected == actual


def _is_pg_real(field: dict[str, Any]) -> bool:
    return bool(field.get("x-pg-real"))


def zip_members(files: dict[str, bytes], part: str) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(files[part])) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def source_rows(url: str, table: str, columns: list[str], filter_column: str, tenant: str
                ) -> list[tuple[Any, ...]]:
    """Ground truth, read straight from the database with its own driver."""
    cols = ", ".join(f'"{c}"' for c in columns)
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return list(db.execute(
                f'SELECT {cols} FROM "{table}" WHERE "{filter_column}" = ? ORDER BY 1', (tenant,)))
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return list(conn.execute(
            f'SELECT {cols} FROM "{table}" WHERE "{filter_column}" = %s ORDER BY 1', (tenant,)))

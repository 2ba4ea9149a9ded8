"""Reads a CSV of the package keeping, for every field, whether it was quoted, and checks the
quoting rule (text quoted, nothing else) against the Table Schema of its resource.

Independent of the exporter, so the tests check the file, not the code. ``check_csv`` takes a
``datapackage.json`` resource: the package-level test can run it on every CSV of a package.
"""

from __future__ import annotations

from typing import Any

BOM = b"\xef\xbb\xbf"
BARE = {"integer", "number", "boolean", "date", "time", "datetime"}
Field = tuple[str | None, bool]  # (value, quoted); an unquoted empty field is None


def tokenize(text: str, delimiter: str = ",") -> list[list[Field]]:
    """Records of (value, quoted) fields; strict RFC 4180 with CRLF between records."""
    rows: list[list[Field]] = []
    row: list[Field] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted field")
                if text[i] == '"':
                    if text.startswith('""', i):
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            field: Field = ("".join(buf), True)
        else:
            start = i
            while i < n and text[i] not in f"{delimiter}\r\n":
                if text[i] == '"':
                    raise ValueError(f"quote inside an unquoted field at {i}")
                i += 1
            field = (text[start:i] or None, False)
        row.append(field)
        if i < n and text[i] == delimiter:
            i += 1
            if i == n:
                row.append((None, False))
                rows.append(row)
            continue
        if i < n and not text.startswith("\r\n", i):
            raise ValueError(f"expected CRLF at {i}, got {text[i:i + 2]!r}")
        i += 2
        rows.append(row)
        row = []
    return rows


def decode(data: bytes, *, bom: bool) -> str:
    """The file's text; the BOM must be there exactly when the dialect says so."""
    assert data.startswith(BOM) == bom, "BOM presence does not match the dialect"
    return data[len(BOM):].decode("utf-8") if bom else data.decode("utf-8")


def check_csv(data: bytes, resource: dict[str, Any]) -> list[list[Field]]:
    """Assert the quoting rule on one CSV and return its records (header included).

    Header names are quoted; in each record a text field (type not bare) is quoted unless
    NULL, a bare field never is; the number of fields matches the schema.
    """
    dialect = resource.get("dialect", {})
    fields = resource["schema"]["fields"]
    rows = tokenize(decode(data, bom=bool(dialect.get("x-bom", False))),
                    dialect.get("delimiter", ","))
    assert rows, "a CSV of the package always has its header"
    assert [value for value, _ in rows[0]] == [f["name"] for f in fields]
    assert all(quoted for _, quoted in rows[0]), "header names are quoted"
    for number, row in enumerate(rows[1:], start=1):
        assert len(row) == len(fields), f"record {number} has {len(row)} fields"
        for (value, quoted), spec in zip(row, fields, strict=True):
            text = spec.get("type", "string") not in BARE
            if value is None:
                continue  # NULL: empty and unquoted whatever the type
            assert quoted == text, (
                f"record {number}, field {spec['name']!r} ({spec.get('type')}): {value!r} "
                f"{'unquoted' if text else 'quoted'}")
    return rows

"""A strict RFC 4180 reader that keeps what the stdlib loses: NULL (empty, unquoted) vs "".

Written independently of the exporter so the round-trip tests check the file, not the code.
"""

from __future__ import annotations


def parse(text: str) -> list[list[str | None]]:
    """Rows of fields; an unquoted empty field is None, a quoted one ``""``."""
    rows: list[list[str | None]] = []
    row: list[str | None] = []
    i, n = 0, len(text)
    if not text:
        return rows
    while i < n:
        if text[i] == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted field")
                ch = text[i]
                if ch == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(ch)
                i += 1
            value: str | None = "".join(buf)
        else:
            start = i
            while i < n and text[i] not in ',\r\n':
                if text[i] == '"':
                    raise ValueError(f"quote inside unquoted field at {i}")
                i += 1
            value = text[start:i] or None
        row.append(value)
        if i >= n:
            rows.append(row)
            break
        if text[i] == ",":
            i += 1
            if i >= n:
                row.append(None)
                rows.append(row)
            continue
        if text.startswith("\r\n", i):
            i += 2
        else:
            raise ValueError(f"expected CRLF at {i}, got {text[i:i+2]!r}")
        rows.append(row)
        row = []
    return rows

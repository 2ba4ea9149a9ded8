"""The code blocks of docs/loading.md (and the client guide) as the tests run them, unedited.

A block is the fenced ```python block that follows an HTML comment such as
``<!-- loader: pyarrow -->``; the comment's text is its name.
"""

from __future__ import annotations

import math
import re
import struct
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADING = ROOT / "docs" / "loading.md"
CLIENT_GUIDE = ROOT / "docs" / "client-guide.md"

_BLOCK = re.compile(r"<!-- ([a-z]+: [a-z-]+) -->\n```python\n(.*?)\n```", re.DOTALL)


def code_blocks(path: Path = LOADING) -> dict[str, str]:
    """Every marked block of a document, by its marker (``loader: pyarrow``)."""
    blocks: dict[str, str] = {}
    for name, code in _BLOCK.findall(path.read_text(encoding="utf-8")):
        assert name not in blocks, f"{path.name}: two blocks marked {name!r}"
        blocks[name] = code + "\n"
    return blocks


def loader_module_source() -> str:
    """``export_loader.py`` as the guide tells a reader to build it: the pyarrow block, then the
    pandas block appended to the same file."""
    blocks = code_blocks()
    return blocks["loader: pyarrow"] + "\n\n" + blocks["loader: pandas"]


def run_block(code: str, name: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute a block as written into ``namespace`` (a fresh one by default)."""
    namespace = {"__name__": name.replace(": ", "_").replace("-", "_")} if namespace is None \
        else namespace
    exec(compile(code, f"<docs {name}>", "exec"), namespace)
    return namespace


def identical(expected: Any, actual: Any, *, single: bool = False) -> bool:
    """Same value and same Python type; floats bit for bit (at 32 bits when ``single``: a
    PostgreSQL ``real``, which the driver hands over as the double nearest to its shortest
    text), Decimals digit for digit, aware and naive datetimes never mixed."""
    if expected is None or actual is None:
        return expected is None and actual is None
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float):
        width = "<f" if single else "<d"
        return struct.pack(width, expected) == struct.pack(width, actual) or (
            math.isnan(expected) and math.isnan(actual))
    if isinstance(expected, Decimal):
        return str(expected) == str(actual)
    if isinstance(expected, datetime | time):
        return bool(expected == actual) and expected.utcoffset() == actual.utcoffset() and (
            (expected.tzinfo is None) == (actual.tzinfo is None))
    if isinstance(expected, date):
        return bool(expected == actual)
    return bool(expected == actual)

"""Open a package's CSV files in LibreOffice Calc the way the guide tells a person to, and
compare every text cell with the file.

The guide's instruction for LibreOffice is: character set "Unicode (UTF-8)", the package's
separator, "Format quoted field as text". In LibreOffice's CSV filter options that is
``CSV:<separator>,34,76,1,,<language>,true,false`` (34: the quote ``"``; 76: UTF-8; start at
line 1; then "quoted field as text" on and "detect special numbers" off). Each CSV is
converted headless to ``.xlsx`` and read back with openpyxl; every field the manifest types as
text (quoted in the CSV) must come back as exactly the text the file holds (a cell's line
breaks are LF, whatever the file used: the CSV, not the sheet, keeps CR). With "quoted field
as text" off (a spreadsheet's default), the same files lose leading zeros and long digit
strings: ``mangled`` shows it.

Run by tests/test_libreoffice.py when ``soffice`` is installed (Debian:
``apt-get install libreoffice-calc-nogui``); by hand, on an unpacked package::

    .venv/bin/python -m tests.libreoffice_check path/to/export-folder

It prints one line per cell that differs and exits 1 if any does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import openpyxl

from tests.csvquoting import BARE, decode, tokenize
from tests.package_checks import unescape

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
LANGUAGES = {",": 1033, ";": 1031}  # English (US) for ',', German (Germany) for ';'


def filter_options(delimiter: str, *, quoted_as_text: bool = True) -> str:
    """LibreOffice's CSV import options for the package's dialect."""
    return (f"CSV:{ord(delimiter)},34,76,1,,{LANGUAGES[delimiter]},"
            f"{'true' if quoted_as_text else 'false'},false")


def convert(paths: list[Path], out: Path, delimiter: str, *, quoted_as_text: bool = True
            ) -> dict[Path, Path]:
    """Each CSV as LibreOffice imports it, saved as .xlsx in ``out`` (one soffice run)."""
    if SOFFICE is None:
        raise RuntimeError("LibreOffice (soffice) is not installed")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lo-profile-") as profile:
        subprocess.run(
            [SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless", "--norestore",
             f"--infilter={filter_options(delimiter, quoted_as_text=quoted_as_text)}",
             "--convert-to", "xlsx", "--outdir", str(out), *map(str, paths)],
            check=True, capture_output=True, timeout=600)
    converted = {}
    for path in paths:
        target = out / (path.stem + ".xlsx")
        if not target.exists():
            raise RuntimeError(f"LibreOffice did not convert {path}")
        converted[path] = target
    return converted


def cells(xlsx: Path) -> list[list[Any]]:
    """The values of the first sheet, row by row (text with OOXML's ``_xHHHH_`` escapes of
    control characters decoded, as Calc holds it)."""
    book = openpyxl.load_workbook(xlsx)
    return [[unescape(c.value) if isinstance(c.value, str) else c.value for c in row]
            for row in book.worksheets[0].iter_rows()]


def in_a_cell(text: str | None) -> str | None:
    """The file's text as a spreadsheet cell holds it: an empty text is an empty cell, and a
    line break is one LF (Calc turns CR LF and CR into LF; the CSV keeps them exactly)."""
    if not text:
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_fields(data: bytes, resource: dict[str, Any]) -> list[list[tuple[str, str | None]]]:
    """(field name, text) of every text field of every record, as the file holds it."""
    dialect = resource.get("dialect", {})
    records = tokenize(decode(data, bom=bool(dialect.get("x-bom"))),
                       dialect.get("delimiter", ","))
    fields = resource["schema"]["fields"]
    return [[(f["name"], value) for (value, _), f in zip(record, fields, strict=True)
             if f.get("type", "string") not in BARE] for record in records[1:]]


def differences(folder: Path, package: dict[str, Any], out: Path) -> list[str]:
    """Every text cell LibreOffice reads differently from the file, one line each."""
    resources = [r for r in package["resources"] if r.get("type") == "table"]
    delimiter = resources[0].get("dialect", {}).get("delimiter", ",") if resources else ","
    paths = {folder / r["path"]: r for r in resources}
    # documents/index.csv and data/documents.csv share a stem: one folder per CSV folder
    converted: dict[Path, Path] = {}
    for parent in sorted({p.parent for p in paths}):
        batch = [p for p in paths if p.parent == parent]
        converted.update(convert(batch, out / parent.relative_to(folder), delimiter))
    problems = []
    for path, resource in paths.items():
        sheet = cells(converted[path])
        header = [f["name"] for f in resource["schema"]["fields"]]
        if sheet[0][:len(header)] != header:
            problems.append(f"{resource['path']}: header {sheet[0]} != {header}")
            continue
        for number, record in enumerate(text_fields(path.read_bytes(), resource), start=1):
            row = sheet[number] if number < len(sheet) else []
            for name, want in record:
                got = row[header.index(name)] if header.index(name) < len(row) else None
                if in_a_cell(want) != got:
                    problems.append(f"{resource['path']} record {number} {name}: file "
                                    f"{want!r}, LibreOffice {got!r}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    folder = Path(argv[0])
    package = json.loads((folder / "datapackage.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="lo-check-") as out:
        problems = differences(folder, package, Path(out))
    for line in problems:
        print(line)
    print(f"{len(problems)} text cell(s) differ" if problems else "every text cell is exact")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

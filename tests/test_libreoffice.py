"""Issue 11: the CSV files opened in LibreOffice Calc as the guide says (UTF-8, the package's
separator, "Format quoted field as text") give back every text value, leading zeros, 20-digit
codes, ``=...`` and ``1/2`` included. Runs where ``soffice`` is installed (Debian's
``libreoffice-calc-nogui``; ``.ci/run`` installs it); the same check runs by hand with
``python -m tests.libreoffice_check FOLDER``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests import libreoffice_check as lo
from tests.conftest import Platform
from tests.helpers import fetch_package
from tests.package_checks import export, manifest, save
from tests.test_package_for_people import add_codes

pytestmark = pytest.mark.skipif(lo.SOFFICE is None, reason="LibreOffice (soffice) is not "
                                "installed: apt-get install libreoffice-calc-nogui")


@pytest.mark.parametrize("options", [{}, {"excel_semicolon": True}],
                         ids=["exact", "excel-semicolon"])
def test_text_cells_come_back_exactly(sqlite_platform: Platform, tmp_path: Path,
                                      options: dict[str, bool]) -> None:
    add_codes(sqlite_platform)
    files = fetch_package(export("t-1", **options))
    folder = save(files, tmp_path / "package")
    assert lo.differences(folder, manifest(files), tmp_path / "lo") == []

    # the values spreadsheets used to change, compared with the database itself
    converted = lo.convert([folder / "data" / "codes.csv"], tmp_path / "codes",
                           ";" if options else ",")
    sheet = lo.cells(converted[folder / "data" / "codes.csv"])
    column = sheet[0].index("code")
    with sqlite3.connect(sqlite_platform.source_url.removeprefix("sqlite:///")) as db:
        truth = [row[0] for row in db.execute(
            "SELECT code FROM codes WHERE tenant_id = 't-1' ORDER BY id")]
    got = [row[column] for row in sheet[1:]]
    guard = "'" if options else ""  # the Excel variant's documented apostrophe
    assert got == [None if not v else (guard + v if v[0] in "=+-@\t" and options else v)
                   for v in truth]
    assert "01067" in got and "12345678901234567890" in got and "1/2" in got


def test_without_quoted_as_text_calc_changes_values(sqlite_platform: Platform,
                                                    tmp_path: Path) -> None:
    """The control: Calc's default import turns codes into numbers (why the rule exists)."""
    add_codes(sqlite_platform)
    files = fetch_package(export("t-1"))
    folder = save(files, tmp_path / "package")
    path = folder / "data" / "codes.csv"
    sheet = lo.cells(lo.convert([path], tmp_path / "lo", ",", quoted_as_text=False)[path])
    codes = [row[sheet[0].index("code")] for row in sheet[1:]]
    assert "01067" not in codes and 1067 in codes

"""Issue 11 acceptance on real packages: what a person downloads and opens.

On the awkward-values platform (plus a table of the values spreadsheets mangle) and on the
reference platform: every ``.xlsx`` cell equals its source value with the right type; every CSV
(``documents/index.csv`` included) follows the quoting rule in each dialect; the single archive,
unpacked, validates with frictionless and holds exactly the loose files; ``README.html`` and
``README.txt`` state the package's real files, sizes and dates in the tenant's language and
render in headless Chromium without an error.
"""

from __future__ import annotations

import io
import re
import shutil
import sqlite3
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exporters.guide import format_moment, format_size
from tenant_export.refplatform import Platform as RefPlatform
from tenant_export.refplatform import PlatformSpec, create_sqlite, upload_blobs
from tests.conftest import Platform, _platform
from tests.csvquoting import check_csv
from tests.helpers import decode, decode_mixed, fetch_package, source_rows
from tests.package_checks import (
    check_workbook,
    csv_rows,
    export,
    manifest,
    save,
    workbook_rows,
)

# What spreadsheets change without a word (issue 11), as text, next to a number and a date.
CODES_DDL = ("CREATE TABLE codes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, code TEXT, "
             "amount REAL, day DATE)")
CODES: list[tuple[str | None, float | None, str | None]] = [
    ("01067", 1234.5, "2026-01-02"), ("007", 0.1, None), ("12345678901234567890", -0.0, None),
    ("1/2", None, "1999-12-31"), ('=HYPERLINK("http://example.org","click")', 1e-300, None),
    ("=1+1", 3.0, None), ("+49 170 0000", None, None), ("-5", None, None),
    ("@SUM(A1)", None, None), ("1,5", None, None), ("3.14", None, None),
    ("2026-01-02", None, None), ("TRUE", None, None), (None, None, None), ("", None, None),
    ("\tindented", None, None), ("line\nbreak", None, None),
]
VARIANTS = {"exact": {}, "excel-semicolon": {"excel_semicolon": True}}


def add_codes(platform: Platform) -> None:
    with sqlite3.connect(platform.source_url.removeprefix("sqlite:///")) as db:
        db.execute(CODES_DDL)
        db.executemany("INSERT INTO codes (tenant_id, code, amount, day) VALUES ('t-1', ?, ?, ?)",
                       CODES)
        db.execute("INSERT INTO codes (tenant_id, code) VALUES ('t-2', 'not yours')")


@pytest.fixture
def awkward(sqlite_platform: Platform) -> Platform:
    add_codes(sqlite_platform)
    return sqlite_platform


@pytest.fixture
def reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str,
              prefect_server: None) -> tuple[Platform, RefPlatform]:
    """The reference platform (three clubs, locales en/de/fr) behind the export flow."""
    ref = create_sqlite(tmp_path / "ref.sqlite", PlatformSpec.tiny())
    env = _platform(monkeypatch, tmp_path, moto_endpoint, f"sqlite:///{ref.location}",
                    ("test", "test"))
    (tmp_path / "catalog.toml").write_text(ref.catalog_toml)
    upload_blobs(env.s3, env.documents_bucket, ref, workers=4)
    return env, ref


def table_resources(package: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in package["resources"] if r.get("type") == "table"]


def sqlite_rows(url: str, table: str, columns: list[str], key: list[str], where: str,
                tenant: str) -> list[dict[str, Any]]:
    """Ground truth with SQLite's own driver, in primary-key order (the CSV's order)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    order = ", ".join(f'"{c}"' for c in key)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        rows = db.execute(f'SELECT {cols} FROM "{table}" WHERE "{where}" = ? ORDER BY {order}',
                          (tenant,)).fetchall()
    return [dict(zip(columns, r, strict=True)) for r in rows]


def value_names(resource: dict[str, Any]) -> list[str]:
    fields = resource["schema"]["fields"]
    return [f["name"] for i, f in enumerate(fields)
            if not (i and f["name"].endswith("__sqlite_type") and fields[i - 1]["type"] == "any")]


def decoded_rows(resource: dict[str, Any], rows: list[dict[str, str | None]]
                 ) -> list[dict[str, Any]]:
    """Source values from the CSV with the tests' own decoder (the CSV is proven equal to the
    source by test_export_roundtrip and test_tenancy)."""
    fields = {f["name"]: f for f in resource["schema"]["fields"]}
    out = []
    for row in rows:
        values: dict[str, Any] = {}
        for name in value_names(resource):
            if fields[name]["type"] == "any" and f"{name}__sqlite_type" in row:
                values[name] = decode_mixed(row[name], row[f"{name}__sqlite_type"])
            else:
                values[name] = decode(fields[name], row[name], "sqlite")
        out.append(values)
    return out


# -- the workbooks ---------------------------------------------------------------------------


def test_every_workbook_cell_is_the_source_value_awkward(awkward: Platform) -> None:
    files = fetch_package(export("t-1"))
    package = manifest(files)
    compared = 0
    for resource in table_resources(package):
        rows = csv_rows(files[resource["path"]], resource)
        if "x-source-table" in resource:
            table = resource["x-source-table"]
            where = "id" if table == "tenants" else "tenant_id"
            source = sqlite_rows(awkward.source_url, table, value_names(resource),
                                 resource["schema"]["primaryKey"], where, "t-1")
        else:  # documents/index.csv: no table behind it
            source = decoded_rows(resource, rows)
        workbook = files[resource["path"].removesuffix(".csv") + ".xlsx"]
        compared += check_workbook(workbook, resource, rows, source)
    assert compared > 350  # non-NULL cells, every table

    header, cells = workbook_rows(files["data/codes.xlsx"])
    column = header.index("code")
    codes = [c[column] for c in cells]
    for cell, (text, _, _) in zip(codes, CODES, strict=True):
        assert cell.value == (text or None) if text is None else cell.value == text, text
    assert codes[0].data_type == "s" and codes[0].value == "01067"  # leading zero kept
    assert codes[2].value == "12345678901234567890"  # not 1.23456789012346E+19
    assert codes[3].value == "1/2" and not codes[3].is_date  # not a date
    assert codes[4].data_type == "s" and codes[4].value.startswith("=HYPERLINK")  # no formula
    day = [c[header.index("day")] for c in cells]
    assert day[0].value == "2026-01-02"  # SQLite holds dates as text: exactly as stored
    amount = [c[header.index("amount")] for c in cells]
    assert amount[0].data_type == "n" and amount[0].value == 1234.5


@pytest.mark.postgres
def test_every_workbook_cell_is_the_source_value_postgres(postgres_platform: Platform) -> None:
    """PostgreSQL types its values: dates and timestamps are date cells, numeric exact."""
    files = fetch_package(export("t-1"))
    package = manifest(files)
    compared = 0
    for resource in table_resources(package):
        rows = csv_rows(files[resource["path"]], resource)
        if "x-source-table" in resource:
            table = resource["x-source-table"]
            names = value_names(resource)
            truth = source_rows(postgres_platform.source_url, table, names,
                                "id" if table == "tenants" else "tenant_id", "t-1")
            source = [dict(zip(names, r, strict=True)) for r in truth]
        else:
            source = decoded_rows(resource, rows)
        workbook = files[resource["path"].removesuffix(".csv") + ".xlsx"]
        compared += check_workbook(workbook, resource, rows, source)
    assert compared > 250
    header, cells = workbook_rows(files["data/members.xlsx"])
    joined = [c[header.index("joined")] for c in cells if c[header.index("joined")].value]
    born = [c[header.index("born")] for c in cells if c[header.index("born")].value]
    assert joined and all(c.is_date for c in joined)
    assert born and all(c.is_date for c in born)


def test_every_workbook_cell_is_the_source_value_reference(
        reference: tuple[Platform, RefPlatform]) -> None:
    env, ref = reference
    files = fetch_package(export("harbour-rowing"))
    package = manifest(files)
    compared = 0
    for resource in table_resources(package):
        rows = csv_rows(files[resource["path"]], resource)
        workbook = files[resource["path"].removesuffix(".csv") + ".xlsx"]
        compared += check_workbook(workbook, resource, rows, decoded_rows(resource, rows))
    assert compared > 300
    # members: postcodes with leading zeros and formula-like notes stay text
    header, cells = workbook_rows(files["data/members.xlsx"])
    postcodes = {c[header.index("postcode")].value for c in cells}
    notes = {c[header.index("notes")].value for c in cells}
    assert "01067" in postcodes and "=1+1" in notes
    assert ref.tenant_ids[0] == "harbour-rowing" and env.export_keys()


# -- every CSV, the quoting rule ---------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_csv_follows_the_quoting_rule(awkward: Platform, variant: str) -> None:
    files = fetch_package(export("t-1", **VARIANTS[variant]))
    package = manifest(files)
    checked = []
    for resource in table_resources(package):
        dialect = resource["dialect"]
        assert dialect["delimiter"] == ("," if variant == "exact" else ";")
        assert dialect["x-bom"] is (variant != "exact")
        assert ("x-formula-prefix" in dialect) is (variant != "exact")
        check_csv(files[resource["path"]], resource)
        checked.append(resource["path"])
    assert "documents/index.csv" in checked and "data/codes.csv" in checked
    if variant != "exact":  # the formula guard, recorded and applied
        assert b"\"'=1+1\"" in files["data/codes.csv"]


# -- the single download ---------------------------------------------------------------------


def unpack(archive: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.testzip() is None
        names = z.namelist()
        roots = {n.split("/", 1)[0] for n in names}
        assert len(roots) == 1, roots  # one folder, nothing spilled beside it
        z.extractall(folder)
    return folder / roots.pop()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_archive_unpacked_validates_with_frictionless(awkward: Platform, tmp_path: Path,
                                                      variant: str) -> None:
    from frictionless import validate

    result = export("t-1", **VARIANTS[variant])
    files = fetch_package(result)
    archive = result["files"][0]["path"]
    assert archive == f"export-t-1-{result['export_id']}.zip"
    root = unpack(files[archive], tmp_path / "unpacked")
    assert root.name == archive.removesuffix(".zip")
    inside = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    loose = {path: body for path, body in files.items() if path != archive}
    assert inside == loose  # every file, folders kept, the very same bytes
    report = validate(str(root / "datapackage.json"))
    assert report.valid, report.flatten(["resourceName", "rowNumber", "fieldName", "type",
                                         "note"])[:20]


def test_archive_of_the_reference_platform_validates(reference: tuple[Platform, RefPlatform],
                                                     tmp_path: Path) -> None:
    from frictionless import validate

    result = export("choir")
    files = fetch_package(result)
    root = unpack(files[result["files"][0]["path"]], tmp_path / "unpacked")
    report = validate(str(root / "datapackage.json"))
    assert report.valid, report.flatten(["resourceName", "rowNumber", "fieldName", "type",
                                         "note"])[:20]
    # foreign keys between the tables, documents/index.csv -> documents included, hold
    package = manifest(files)
    index = next(r for r in package["resources"] if r["path"] == "documents/index.csv")
    assert index["schema"]["foreignKeys"][0]["reference"]["fields"] == ["id"]


# -- the guide -------------------------------------------------------------------------------


def flat(text: str) -> str:
    """ASCII whitespace collapsed (wrapping does not matter; U+202F in French sizes does)."""
    return re.sub(r"[ \t\r\n]+", " ", text)


def guide_statements(result: dict[str, Any], package: dict[str, Any],
                     language: str) -> list[str]:
    """What the guide must say about this package, from the result and the manifest."""
    listed = [f for f in result["files"] if not f["path"].startswith(("README.", "export-"))
              and f["path"] != "datapackage.json"]
    statements = [f["path"] for f in result["files"] if not f["path"].startswith("README.")]
    for f in listed:
        statements += [format_size(f["bytes"], language), f["sha256"]]
    statements.append(format_moment(datetime.fromisoformat(result["expires_at"]), language))
    statements.append(format_moment(datetime.fromisoformat(result["package_expires_at"]),
                                    language))
    shared = [e["table"] for e in package["x-inventory"]["shared"]]
    assert shared
    statements += shared  # what is not in the export, and why
    return statements


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_guide_in_three_languages_matches_the_package(
        reference: tuple[Platform, RefPlatform], tmp_path: Path) -> None:
    _, ref = reference
    with sqlite3.connect(ref.location) as db:
        locales = dict(db.execute("SELECT id, locale FROM tenants").fetchall())
    pages: dict[str, Path] = {}
    for tenant in ref.tenant_ids:
        language = locales[tenant]
        result = export(tenant, link_ttl="36h")
        files = fetch_package(result)
        package = manifest(files)
        html, text = files["README.html"].decode(), files["README.txt"].decode()
        assert f'<html lang="{language}">' in html
        visible = flat(_visible(html))
        for statement in guide_statements(result, package, language):
            assert statement in visible, (tenant, statement)
            assert statement in flat(text), (tenant, statement)
        guides = {r["path"]: r for r in package["resources"] if r["path"].startswith("README")}
        assert {r["x-language"] for r in guides.values()} == {language}
        assert all(r["type"] == "file" for r in guides.values())
        pages[language] = save(files, tmp_path / tenant) / "README.html"
        created = datetime.fromisoformat(result["created_at"])
        assert datetime.fromisoformat(result["package_expires_at"]) - created == timedelta(
            days=30)
        assert abs((datetime.fromisoformat(result["expires_at"]) - created).total_seconds()
                   - 36 * 3600) < 1
    assert set(pages) == {"en", "de", "fr"}
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    _render_in_chromium(pages)


def _visible(html: str) -> str:
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.hidden = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self.hidden += tag in ("style", "title")

        def handle_endtag(self, tag: str) -> None:
            self.hidden -= tag in ("style", "title")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return " ".join(parser.parts)


def _render_in_chromium(pages: dict[str, Path]) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            for language, path in pages.items():
                page = browser.new_page()
                problems: list[str] = []
                requests: list[str] = []
                page.on("console", lambda m, p=problems: p.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e, p=problems: p.append(str(e)))
                page.on("request", lambda r, q=requests: q.append(r.url))
                page.goto(path.as_uri())
                assert problems == [], (language, problems)
                assert requests == [path.as_uri()], language  # nothing fetched but the page
                assert page.evaluate("document.documentElement.lang") == language
                # every file the page names as a link exists beside it, as unpacked
                for href in page.eval_on_selector_all("a[href]", "e => e.map(a => "
                                                      "a.getAttribute('href'))"):
                    assert (path.parent / href).is_file(), (language, href)
                page.close()
        finally:
            browser.close()


def test_documents_carry_their_upload_date(reference: tuple[Platform, RefPlatform]) -> None:
    """index.csv: the original filename and upload date; each ZIP entry dated by its upload."""
    env, ref = reference
    files = fetch_package(export("harbour-rowing"))
    package = manifest(files)
    index = next(r for r in package["resources"] if r["path"] == "documents/index.csv")
    rows = csv_rows(files["documents/index.csv"], index)
    with sqlite3.connect(ref.location) as db:
        truth = {str(i): (name, uploaded) for i, name, uploaded in db.execute(
            "SELECT id, filename, uploaded_at FROM documents WHERE tenant_id = ?",
            ("harbour-rowing",))}
    assert rows and {r["document_id"] for r in rows} == set(truth)
    for row in rows:
        name, uploaded = truth[str(row["document_id"])]
        assert row["filename"] == name
        moment = datetime.fromisoformat(uploaded)
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        assert row["uploaded_at"] is not None
        assert datetime.fromisoformat(row["uploaded_at"]) == moment
        if row["status"] == "ok":
            with zipfile.ZipFile(io.BytesIO(files[f"documents/{row['zip_part']}"])) as z:
                stamp = datetime(*z.getinfo(row["zip_path"]).date_time, tzinfo=UTC)
            assert abs((stamp - moment).total_seconds()) <= 2, row  # DOS time: 2 s steps
    assert env.export_keys()


def test_a_table_too_wide_for_a_sheet_keeps_its_csv_and_says_so(
        awkward: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """No database here can hold a table wider than a sheet (16,384 columns): the limit is
    lowered so that members (14 columns) is too wide; the rest of the package is unchanged."""
    from flows import package_tables

    monkeypatch.setattr(package_tables, "EXCEL_MAX_COLUMNS", 10)
    files = fetch_package(export("t-1"))
    package = manifest(files)
    assert "data/members.csv" in files and "data/members.xlsx" not in files
    assert "data/select.xlsx" in files  # narrow tables keep their workbook
    members = next(r for r in package["resources"] if r["path"] == "data/members.csv")
    assert "columns" in members["x-no-workbook"]
    guide = flat(files["README.txt"].decode())
    width = len(members["schema"]["fields"])
    assert f"Table “members” has {width} columns, more than a spreadsheet sheet holds" in guide

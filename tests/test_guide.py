"""exporters.guide: README.html and README.txt state what the package holds, in three languages;
the HTML is valid, self-contained and renders in headless Chromium without an error."""

from __future__ import annotations

import re
import shutil
import string
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from exporters.csv_writer import CsvDialect
from exporters.guide import (
    LANGUAGES,
    GuideFile,
    Inventory,
    PackageGuide,
    guide_language,
    render_guide,
)
from exporters.guide_text import MESSAGES

TENANT = "Harbour Rowing <Club> & Co"
FILES = (
    GuideFile("data/members.csv", 1_534_112, "ab" * 32, "table", rows=3, table="members"),
    GuideFile("data/members.xlsx", 9_000, "cd" * 32, "workbook", table="members"),
    GuideFile("data/event_registrations.csv", 88, "e1" * 32, "table", rows=1,
              table="event_registrations"),
    GuideFile("documents/index.csv", 943, "ef" * 32, "index", rows=9),
    GuideFile("documents/documents-0001.zip", 2_317_000_000, "01" * 32, "documents"),
    GuideFile("datapackage.json", 1_234, "23" * 32, "manifest"),
)
INVENTORY = Inventory(
    shared_tables=("countries", "plans"),
    skipped_tables=(("internal_events", "an internal log of the platform"),),
    excluded_columns=(("users", "password_hash"), ("users", "totp_secret")),
    orphan_rows=(("event_registrations", 1),),
    cross_tenant_rows=(("event_attendees", 4),),
    missing_documents=2,
)
GUIDE = PackageGuide(
    tenant_id="t-42", tenant_name=TENANT, export_id="20261126T101500Z-3f2a",
    created_at=datetime(2026, 11, 26, 10, 15, tzinfo=UTC),
    links_expire_at=datetime(2026, 12, 3, 10, 15, tzinfo=UTC),
    package_expires_at=datetime(2027, 2, 24, 9, 5, tzinfo=UTC),
    files=FILES, inventory=INVENTORY, archive_path="export-t-42.zip",
)

# What each language must say about the package above, written out independently.
EXPECTED: dict[str, dict[str, Any]] = {
    "en": {
        "sizes": ["1.5 MB (1,534,112 bytes)", "9.0 kB (9,000 bytes)", "88 bytes", "943 bytes",
                  "2.3 GB (2,317,000,000 bytes)", "1.2 kB (1,234 bytes)"],
        "links": "3 December 2026, 10:15 UTC", "kept": "24 February 2027, 09:05 UTC",
        "created": "26 November 2026, 10:15 UTC",
        "rows": ["3 rows", "1 row,"],
        "statements": ["countries, plans", "“internal_events” is not included: an internal "
                       "log of the platform", "Column “password_hash” of table “users”",
                       "Column “totp_secret”", "1 row of table “event_registrations” belongs "
                       "to no client", "4 rows of table “event_attendees” link",
                       "2 documents are listed"],
        "lo": "File → Open", "quoted": "Format quoted field as text",
        "excel": "Data → From Text/CSV",
    },
    "fr": {
        "sizes": ["1,5 Mo (1\u202f534\u202f112 octets)", "9,0 ko (9\u202f000 octets)",
                  "88 octets", "943 octets", "2,3 Go (2\u202f317\u202f000\u202f000 octets)",
                  "1,2 ko (1\u202f234 octets)"],
        "links": "3 décembre 2026, 10:15 UTC", "kept": "24 février 2027, 09:05 UTC",
        "created": "26 novembre 2026, 10:15 UTC",
        "rows": ["3 lignes", "1 ligne,"],
        "statements": ["countries, plans", "« internal_events » n'est pas incluse : an "
                       "internal log of the platform", "colonne « password_hash » de la table "
                       "« users »", "« totp_secret »", "1 ligne de la table "
                       "« event_registrations » n'appartient à aucun client",
                       "4 lignes de la table « event_attendees » relient",
                       "2 documents figurent"],
        "lo": "Fichier → Ouvrir", "quoted": "Formater les champs entre guillemets comme texte",
        "excel": "Données → À partir d'un fichier texte/CSV",
    },
    "de": {
        "sizes": ["1,5 MB (1.534.112 Bytes)", "9,0 kB (9.000 Bytes)", "88 Bytes", "943 Bytes",
                  "2,3 GB (2.317.000.000 Bytes)", "1,2 kB (1.234 Bytes)"],
        "links": "3. Dezember 2026, 10:15 UTC", "kept": "24. Februar 2027, 09:05 UTC",
        "created": "26. November 2026, 10:15 UTC",
        "rows": ["3 Zeilen", "1 Zeile,"],
        "statements": ["countries, plans", "„internal_events“ ist nicht enthalten: an "
                       "internal log of the platform", "Spalte „password_hash“ der Tabelle "
                       "„users“", "„totp_secret“", "1 Zeile der Tabelle „event_registrations“ "
                       "gehört keinem Kunden", "4 Zeilen der Tabelle „event_attendees“ "
                       "verbinden", "2 Dokumente stehen"],
        "lo": "Datei → Öffnen", "quoted": "Felder in Anführungszeichen als Text formatieren",
        "excel": "Daten → Aus Text/CSV",
    },
}


class Page(HTMLParser):
    """Collects the visible text and checks the markup as it goes."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag in ("style", "title", "head"):
            self.hidden += 1

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("style", "title", "head"):
            self.hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.text.append(data)


def flat(text: str) -> str:
    """ASCII whitespace collapsed (wrapping and indentation do not matter; U+202F does)."""
    return re.sub(r"[ \t\r\n]+", " ", text)


def parse(html: bytes) -> Page:
    page = Page()
    page.feed(html.decode("utf-8"))
    page.close()
    assert page.stack == []
    return page


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_statements_match_the_package_in_each_language(language: str) -> None:
    out = render_guide(PackageGuide(**{**GUIDE.__dict__, "language": language}))
    assert out.language == language
    html_text = flat("".join(parse(out.html).text))
    txt = flat(out.text.decode("utf-8"))
    expected = EXPECTED[language]
    for rendering in (html_text, txt):
        for entry in FILES:
            assert entry.path in rendering
            assert entry.sha256 in rendering
        for size in expected["sizes"]:
            assert size in rendering
        for rows in expected["rows"]:
            assert rows in rendering
        assert expected["links"] in rendering
        assert expected["kept"] in rendering
        assert expected["created"] in rendering
        assert TENANT in rendering
        assert "export-t-42.zip" in rendering
        assert GUIDE.export_id in rendering
        for statement in expected["statements"]:
            assert statement in rendering, statement
        for menu in ("lo", "quoted", "excel"):
            assert expected[menu] in rendering
        assert "Get-FileHash -Algorithm SHA256 .\\data\\members.csv" in rendering
        assert "shasum -a 256 data/members.csv" in rendering
        assert "sha256sum data/members.csv" in rendering


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_html_is_valid_accessible_and_self_contained(language: str) -> None:
    html = render_guide(PackageGuide(**{**GUIDE.__dict__, "language": language})).html
    page = parse(html)
    source = html.decode()
    assert source.startswith("<!DOCTYPE html>\n")
    assert ("html", {"lang": language}) in page.tags
    assert [t for t, _ in page.tags].count("h1") == 1
    assert ("meta", {"charset": "utf-8"}) in page.tags
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp
    assert csp[0]["content"] is not None
    assert "default-src 'none'" in csp[0]["content"]
    assert "&lt;Club&gt; &amp; Co" in source  # the tenant's name is text, never markup
    for tag, attrs in page.tags:
        assert tag not in ("script", "iframe", "img", "link", "object", "embed")
        assert not any(name.startswith("on") for name in attrs)
        assert "src" not in attrs
        if tag == "a":
            href = attrs["href"] or ""
            assert href in {f.path for f in FILES}  # links only to the package's own files
        if tag == "th":
            assert attrs.get("scope") == "col"
    assert "url(" not in source  # no external resource from the stylesheet either
    assert "@import" not in source


def test_text_is_crlf_and_wrapped() -> None:
    text = render_guide(GUIDE).text.decode()
    assert "\n" not in text.replace("\r\n", "")
    for line in text.split("\r\n"):
        assert len(line) <= 78 or " " not in line.strip(), line


def test_nothing_missing_and_exact_csv_say_so() -> None:
    out = render_guide(PackageGuide(**{**GUIDE.__dict__, "inventory": Inventory(),
                                       "package_expires_at": None, "archive_path": None}))
    text = flat(out.text.decode())
    assert MESSAGES["en"]["nothing_missing"] in text
    assert MESSAGES["en"]["package_kept"] in text
    assert "apostrophe" not in text  # the exact CSV is not neutralised
    assert "“Comma” as separator" in text


def test_excel_dialect_is_explained() -> None:
    guide = PackageGuide(**{**GUIDE.__dict__, "dialect": CsvDialect.excel(semicolon=True),
                            "language": "de"})
    text = flat(render_guide(guide).text.decode())
    assert "Byte-Order-Mark, verwenden „;“ als Trennzeichen" in text
    assert "„Semikolon“ als Trennzeichen an" in text
    assert "Apostroph (')" in text


def test_truncated_workbook_cells_are_reported() -> None:
    guide = PackageGuide(**{**GUIDE.__dict__, "inventory": Inventory(truncated_cells=3)})
    assert "3 texts are longer than a spreadsheet cell" in flat(render_guide(guide).text.decode())


@pytest.mark.parametrize(("code", "language"), [
    ("de-CH", "de"), ("fr_FR", "fr"), ("FR", "fr"), ("en", "en"), ("es", "en"), (None, "en"),
    ("", "en"),
])
def test_language_from_a_locale_code(code: str | None, language: str) -> None:
    assert guide_language(code) == language


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_language_has_every_message_with_the_same_placeholders() -> None:
    assert set(LANGUAGES) >= {"en", "fr", "de"}
    for language in LANGUAGES:
        assert MESSAGES[language].keys() == MESSAGES["en"].keys(), language
        for key, text in MESSAGES["en"].items():
            assert placeholders(MESSAGES[language][key]) == placeholders(text), (language, key)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_renders_in_headless_chromium_without_errors(tmp_path: Path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for language in ("en", "fr", "de"):
                path = tmp_path / f"README.{language}.html"
                path.write_bytes(render_guide(
                    PackageGuide(**{**GUIDE.__dict__, "language": language})).html)
                page = browser.new_page()
                problems: list[str] = []
                requests: list[str] = []
                page.on("console", lambda m, p=problems: p.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e, p=problems: p.append(str(e)))
                page.on("request", lambda r, q=requests: q.append(r.url))
                page.goto(path.as_uri())
                assert problems == []
                assert requests == [path.as_uri()]  # nothing fetched but the page itself
                visible = flat(page.inner_text("main"))
                assert TENANT in visible
                assert EXPECTED[language]["links"] in visible
                assert all(f.path in visible for f in FILES)
                page.close()
        finally:
            browser.close()

"""The guide inside the package: ``README.html`` and ``README.txt`` in the client's language.

It tells a person, in plain words, what each file is (with its size and checksum), how to open
the tables in a spreadsheet, how to check that nothing was damaged, what is not in the export
and why, and how long the links and the package last. Everything it states comes from the
``PackageGuide`` it is given, so it cannot disagree with the package. The HTML is one
self-contained page: no script, no external resource (a Content-Security-Policy forbids both).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from exporters.csv_writer import DEFAULT_DIALECT, CsvDialect
from exporters.guide_text import MESSAGES, MONTHS, NUMBERS

LANGUAGES = tuple(MESSAGES)
DEFAULT_LANGUAGE = "en"
HTML_NAME, TEXT_NAME = "README.html", "README.txt"
TEXT_WIDTH = 78
UNKNOWN = "—"  # the size or checksum of a file written after the guide
_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html", "html.j2"]), undefined=StrictUndefined,
                   keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class GuideFile:
    """One file of the package as the guide lists it.

    ``kind``: ``table`` (CSV of ``table``), ``workbook`` (its .xlsx), ``index``
    (documents/index.csv), ``documents`` (a ZIP part), ``manifest``, ``archive``, ``other``.
    ``bytes`` and ``sha256`` are None for a file written after the guide (``datapackage.json``
    lists the guide's own checksum, so the guide cannot list the manifest's): shown as "—".
    """

    path: str
    bytes: int | None
    sha256: str | None
    kind: str = "other"
    rows: int | None = None
    table: str | None = None


@dataclass(frozen=True)
class Inventory:
    """What is not in the export, as the catalog and the export found it."""

    shared_tables: tuple[str, ...] = ()
    skipped_tables: tuple[tuple[str, str], ...] = ()  # (table, reason in the client's language)
    excluded_columns: tuple[tuple[str, str], ...] = ()  # (table, column)
    orphan_rows: tuple[tuple[str, int], ...] = ()  # (table, rows owned by no tenant)
    cross_tenant_rows: tuple[tuple[str, int], ...] = ()  # (table, rows linking two tenants)
    missing_documents: int = 0
    truncated_cells: int = 0  # texts cut in the workbooks (the CSV holds them whole)
    too_wide: tuple[tuple[str, int], ...] = ()  # (table, columns): no workbook, CSV only


@dataclass(frozen=True)
class PackageGuide:
    """Everything the guide states; ``language`` is a code such as ``fr`` or ``de-CH``."""

    tenant_id: str
    tenant_name: str
    export_id: str
    created_at: datetime
    links_expire_at: datetime
    files: tuple[GuideFile, ...]
    package_expires_at: datetime | None = None
    inventory: Inventory = field(default_factory=Inventory)
    language: str | None = None
    dialect: CsvDialect = DEFAULT_DIALECT
    archive_path: str | None = None  # the single-download archive, when one is offered


@dataclass(frozen=True)
class GuideFiles:
    """The two renderings, as bytes for the package root."""

    html: bytes
    text: bytes
    language: str


def guide_language(code: str | None) -> str:
    """The supported language for a code (``de-CH`` → ``de``); English otherwise."""
    primary = (code or "").strip().replace("_", "-").split("-")[0].lower()
    return primary if primary in MESSAGES else DEFAULT_LANGUAGE


def format_number(value: int, language: str) -> str:
    """``1234567`` as ``1,234,567`` / ``1 234 567`` / ``1.234.567``."""
    return f"{value:,}".replace(",", NUMBERS[language][0])


def format_size(size: int, language: str) -> str:
    """Human size (1000-based, one decimal) and the exact byte count."""
    _, decimal, _, units = NUMBERS[language]
    human, unit = float(size), 0
    while human >= 1000 and unit < len(units) - 1:
        human, unit = human / 1000, unit + 1
    exact = format_number(size, language)
    if unit == 0:
        return f"{exact} {units[0]}"
    shown = f"{human:.1f}".replace(".", decimal) + " " + units[unit]
    return MESSAGES[language]["size"].format(human=shown, exact=exact, unit=units[0])


def format_moment(moment: datetime, language: str) -> str:
    """``26 November 2026, 10:15 UTC`` in the language's words (always UTC)."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    pattern = NUMBERS[language][2]
    return pattern.format(day=utc.day, month=MONTHS[language][utc.month - 1], year=utc.year,
                          time=f"{utc:%H:%M}")


def render_guide(guide: PackageGuide) -> GuideFiles:
    """``README.html`` and ``README.txt`` for the package described by ``guide``."""
    language = guide_language(guide.language)
    context = _context(guide, language)
    html = _ENV.get_template("guide.html.j2").render(**context)
    text = _ENV.get_template("guide.txt.j2").render(**context, wrap=_wrap)
    return GuideFiles(html=html.encode("utf-8"), text=text.replace("\n", "\r\n").encode("utf-8"),
                      language=language)


def _wrap(paragraph: str, indent: str = "", bullet: str = "") -> str:
    """A paragraph of README.txt; a bullet hangs (its later lines align with its text)."""
    return textwrap.fill(paragraph, TEXT_WIDTH, initial_indent=indent + bullet,
                         subsequent_indent=indent + " " * len(bullet),
                         break_long_words=False, break_on_hyphens=False)


def _context(guide: PackageGuide, language: str) -> dict[str, Any]:
    t = MESSAGES[language]
    when = {"created": format_moment(guide.created_at, language)}
    separator = t["sep_semicolon"] if guide.dialect.delimiter == ";" else t["sep_comma"]
    example = next((f.path for f in guide.files if f.kind == "table"), "datapackage.json")
    csv_notes = [t["csv_rule"]]
    if guide.dialect.bom or guide.dialect.neutralise_formulas:
        csv_notes.append(t["csv_excel"].format(sep=guide.dialect.delimiter))
    times = [t["links_until"].format(when=format_moment(guide.links_expire_at, language)),
             t["package_until"].format(when=format_moment(guide.package_expires_at, language))
             if guide.package_expires_at else t["package_kept"]]
    if guide.archive_path:
        times.append(t["archive_hint"].format(archive=guide.archive_path))
    return {
        "lang": language, "t": t,
        "intro": t["intro"].format(tenant=guide.tenant_name, **when),
        "files": [{"path": f.path, "what": _describe(f, language), "sha256": f.sha256 or UNKNOWN,
                   "size": UNKNOWN if f.bytes is None else format_size(f.bytes, language)}
                  for f in guide.files],
        "open_steps": [t["open_lo"].format(sep_name=separator),
                       t["open_excel"].format(sep_name=separator)],
        "csv_notes": csv_notes,
        "commands": [(t["os_windows"], "Get-FileHash -Algorithm SHA256 .\\"
                      + example.replace("/", "\\")),
                     (t["os_mac"], f"shasum -a 256 {example}"),
                     (t["os_linux"], f"sha256sum {example}")],
        "omissions": _omissions(guide.inventory, language) or [t["nothing_missing"]],
        "times": times,
        "footer": t["footer"].format(export_id=guide.export_id, tenant=guide.tenant_name,
                                     **when),
    }


def _counted(key: str, count: int, language: str, **values: str) -> str:
    """The message for ``count`` things: its ``_one`` form for exactly one."""
    t = MESSAGES[language]
    template = t[f"{key}_one"] if count == 1 and f"{key}_one" in t else t[key]
    return template.format(count=format_number(count, language), **values)


def _describe(entry: GuideFile, language: str) -> str:
    t = MESSAGES[language]
    key = f"kind_{entry.kind}" if f"kind_{entry.kind}" in t else "kind_other"
    return _counted(key, entry.rows or 0, language, table=entry.table or entry.path)


def _omissions(inventory: Inventory, language: str) -> list[str]:
    t = MESSAGES[language]
    lines = []
    if inventory.shared_tables:
        lines.append(t["shared"].format(tables=", ".join(inventory.shared_tables)))
    lines += [t["skipped"].format(table=name, reason=reason)
              for name, reason in inventory.skipped_tables]
    lines += [t["excluded"].format(table=name, column=column)
              for name, column in inventory.excluded_columns]
    lines += [_counted("orphans", count, language, table=name)
              for name, count in inventory.orphan_rows if count]
    lines += [_counted("cross", count, language, table=name)
              for name, count in inventory.cross_tenant_rows if count]
    if inventory.missing_documents:
        lines.append(_counted("missing_documents", inventory.missing_documents, language))
    if inventory.truncated_cells:
        lines.append(_counted("truncated", inventory.truncated_cells, language))
    lines += [t["too_wide"].format(table=name, count=format_number(count, language))
              for name, count in inventory.too_wide]
    return lines

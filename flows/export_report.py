"""What an export run tells people: the operator (result and progress artifacts) and the
tenant's contacts (the export-ready email). Plain code: the flow decides when.

The result is a markdown artifact an operator reads without opening logs: what happened in one
sentence, then the files with sizes, rows and checksums. Links appear only when asked for, each
in its own code block under the table: a code block shows ``&`` as ``&`` (a table cell showed
``&amp;``, and the copied link was refused), and a long link cannot push the sizes and
checksums off screen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flows.context import RunContext
from flows.package_links import ExportResult, Notice
from kernel.errors import ExportError
from kernel.ids import artifact_key
from kernel.settings import Settings
from notify import PackageFile, SmtpConfig, notify_export_ready
from sources.contacts import read_contacts

logger = logging.getLogger(__name__)
NOT_ASKED = "not sent: not asked for (the caller sends its own notice)"
PROGRESS_EVERY_SECONDS = 2.0


def result_key(tenant_id: str) -> str:
    """The key of a tenant's export result artifact (the latest run's is on top)."""
    return artifact_key("export", tenant_id)


def result_markdown(result: ExportResult, *, with_links: bool, fresh: bool = False) -> str:
    """The run's result: a sentence, the files, the notice, and the links when asked for;
    ``fresh``: links made anew for a retained package (``export_links``)."""
    size = sum(f.bytes for f in result.files[1:]) if _has_archive(result) else sum(
        f.bytes for f in result.files)
    rows = sum(f.rows or 0 for f in result.files if f.path.startswith("data/")
               and f.path.endswith(".csv"))
    lines = [
        f"# Export `{result.export_id}` of tenant `{result.tenant_id}`: "
        f"{'fresh links' if fresh else 'completed'}", "",
        f"{len(result.files)} files, {_size(size)} ({size} bytes), {rows} table rows. "
        f"Links expire {result.expires_at}; the package is kept until "
        f"{result.package_expires_at or 'its retention ends'}.",
    ]
    if result.notice is not None:
        lines.append(f"Export-ready email to the tenant's contacts: {result.notice.reason}.")
    if result.documents_missing:
        lines.append(f"{len(result.documents_missing)} document(s) listed as missing in "
                     "documents/index.csv: " + ", ".join(
                         f"{d.document_id} ({d.reason})" for d in result.documents_missing))
    lines += ["", "| file | size | bytes | rows | SHA-256 |", "|---|---:|---:|---:|---|"]
    lines += [f"| `{f.path}` | {_size(f.bytes)} | {f.bytes} | "
              f"{'' if f.rows is None else f.rows} | `{f.sha256}` |" for f in result.files]
    if with_links:
        lines += ["", "## Links", "", "Each link is a bearer secret until it expires: send it "
                  "only to the tenant's authorised contacts. Copy it from its block."]
        for f in result.files:
            lines += ["", f"**{f.path}**", "", "```text", f.url, "```"]
    else:
        lines += ["", "Links are not shown here: run the export-links deployment or "
                  f"`tenant-export links {result.tenant_id}` for fresh ones."]
    return "\n".join(lines)


def failure_markdown(tenant_id: str, reason: str, *, refused: bool,
                     export_id: str | None) -> str:
    """The run's result when it ended without an export: what happened, and what was kept."""
    what = "refused" if refused else "failed"
    lines = [f"# Export of tenant `{tenant_id}`: {what}", "", reason, ""]
    if refused:
        lines.append("Nothing was written. Correct the request and start it again.")
    else:
        discarded = f" (export {export_id} was discarded)" if export_id else ""
        lines.append(f"Nothing was published{discarded}; no link was made. The run's logs "
                     "hold the details.")
    return "\n".join(lines)


def _has_archive(result: ExportResult) -> bool:
    return bool(result.files) and result.files[0].path.endswith(".zip") and (
        result.files[0].path.startswith("export-"))


def _size(size: int) -> str:
    value, units = float(size), ["bytes", "kB", "MB", "GB", "TB"]
    unit = 0
    while value >= 1000 and unit < len(units) - 1:
        value, unit = value / 1000, unit + 1
    return f"{size} bytes" if unit == 0 else f"{value:.1f} {units[unit]}"


def throttled(update: Callable[[float, str], None],
              every: float = PROGRESS_EVERY_SECONDS) -> Callable[[float, str], None]:
    """``update`` at most every ``every`` seconds (the last call before a stage is kept)."""
    last = [0.0]

    def report(fraction: float, line: str) -> None:
        now = time.monotonic()
        if now - last[0] >= every or fraction >= 1:
            last[0] = now
            update(fraction, line)

    return report


def notify_contacts(ctx: RunContext, settings: Settings, result: ExportResult,
                    created: datetime) -> Notice:
    """Email the tenant's authorised contacts that the package is ready (names and sizes,
    never a link); the outcome, whatever it is, becomes the result's notice."""
    files = [PackageFile(f.path, f.bytes) for f in result.files
             if not (f.path.startswith("export-") and f.path.endswith(".zip"))]
    try:
        contacts = read_contacts(ctx.engine, ctx.catalog.config.contacts, result.tenant_id)
        delivery = notify_export_ready(
            SmtpConfig.from_settings(settings), contacts.addresses, tenant_id=result.tenant_id,
            export_id=result.export_id, files=files,
            delete_on=created + timedelta(days=settings.export_retention_days),
            language=contacts.language)
    except ExportError as err:  # the package is published: a lost email must not undo it
        logger.warning("export-ready email of tenant %s not sent: %s", result.tenant_id, err)
        return Notice(sent=False, recipients=0, reason=f"not sent: {error_line(err)}")
    return Notice(sent=delivery.sent, recipients=delivery.recipients, reason=delivery.reason)


def error_line(error: object) -> str:
    """An error's first line, never a traceback (audit reasons, notices, artifacts)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def artifact_facts(result: ExportResult) -> dict[str, Any]:
    """Counts for audit events and Prefect events (never a link)."""
    loose = result.files[1:] if _has_archive(result) else result.files
    return {"export_id": result.export_id, "files_count": len(loose),
            "bytes": sum(f.bytes for f in loose)}

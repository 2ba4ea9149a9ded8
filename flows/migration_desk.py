"""The assisted-migration desk on the control database, without Prefect.

What the ``migration`` commands that only read or append to the ledger need (``log``,
``book``, ``cancel``, ``no-show``, ``correct``, ``statement``): the desk over the audited
ledger and the price list, and the command carried out. The CLI answers those directly
(Prefect's import and a flow run cost seconds an operator typing them many times a day should
not wait); ``flows.migration_flow`` runs the same code inside its flows, and keeps ``open``
(the platform database's tenant check) and ``close`` (the statement published to S3 and as an
artifact) for itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from billing.pricelist import DEFAULT_PRICE_LIST, PriceList
from billing.tz import berlin_date
from flows.migration import OPENED, MigrationDesk, Request
from flows.observe import audit, current_actor
from kernel.errors import BadInput
from kernel.settings import Settings
from storage.audit import AuditKind
from storage.ledger import Ledger, LedgerEvent

LEDGER_COMMANDS = frozenset({"log", "book", "cancel", "no-show", "correct", "statement"})
"""Commands that touch nothing but the ledger and the audit trail (no lock, no S3, no
artifact): :func:`carry_out` does them."""


def open_desk(settings: Settings) -> MigrationDesk:
    """The ledger of the control database and the operators' price list."""
    prices = DEFAULT_PRICE_LIST
    if settings.price_list is not None:
        from billing.errors import RuleViolation  # noqa: PLC0415

        try:
            prices = PriceList.from_file(settings.price_list)
        except RuleViolation as err:
            raise BadInput(str(err)) from err
    return MigrationDesk(AuditedLedger(settings), prices)


class AuditedLedger(Ledger):
    """The migration ledger whose every new entry is also a ``migration.entry`` event of the
    audit trail (case, kind of entry, entry id; amounts stay in the ledger)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.resolved_control_url())
        self._settings = settings

    def append(self, new: LedgerEvent) -> tuple[LedgerEvent, bool]:
        stored, created = super().append(new)
        if created:  # a replayed command (same id) is one entry, audited once
            opened = new if new.kind == OPENED else self.get(new.case_id)
            tenant = opened.payload.get("tenant_id") if opened is not None else None
            audit(self._settings, AuditKind.MIGRATION_ENTRY, str(tenant) if tenant else None,
                  current_actor(), case_id=new.case_id, entry=new.kind,
                  entry_id=new.event_id)
        return stored, created


def carry_out(desk: MigrationDesk, r: Request, now: datetime) -> dict[str, Any]:
    """One of the :data:`LEDGER_COMMANDS` (``now``: when the command was given)."""
    if r.command == "log":
        return desk.log(r.case_id, r.minutes, r.kind, r.on or berlin_date(now), r.note,
                        r.entry_id)
    if r.command == "book":
        if r.start is None:
            raise BadInput("this action needs start")
        return desk.book(r.case_id, r.start, r.minutes, r.at or now)
    if r.command == "cancel":
        return desk.cancel(r.booking_id, r.at or now)
    if r.command == "no-show":
        return desk.no_show(r.booking_id, r.at or now)
    if r.command == "correct":
        return desk.correct(r.case_id, r.reverses, r.note, r.entry_id)
    if r.command != "statement":
        raise BadInput(f"migration {r.command} is not a ledger command")
    issued = desk.closed_statement(r.case_id)
    return issued if issued is not None else desk.statement(r.case_id).to_json()


def ledger_command(settings: Settings, request: Request, now: datetime) -> dict[str, Any]:
    """Carry out one of the :data:`LEDGER_COMMANDS` on the control database."""
    desk = open_desk(settings)
    try:
        return carry_out(desk, request, now)
    finally:
        desk.ledger.close()

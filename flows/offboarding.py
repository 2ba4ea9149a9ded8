"""The offboarding case in plain code: from contract end to the deletion certificate.

A case is recorded in the control database (``storage.cases``) with its due date; each step is
recorded once, when done, with an audit event (``case.step``). Nothing waits in a process:

1. ``final_backup``, ``export``, ``export_notice``: done by the case flow when the case starts
   (a rerun resumes at the first step not recorded);
2. ``deletion_notice``: sent by the daily sweeper ``notice_days`` before the retention ends; it
   announces the purge date, never less than ``notice_days`` after the notice itself;
3. ``purged``: the sweeper purges on the announced date unless a legal hold is set (recorded by
   the purge itself, which also closes a case when an operator purges by hand).

Heavy steps (backup, export, links, purge) are Prefect flows, handed in as :class:`CaseActions`
so this module stays testable without Prefect. Emails carry names and sizes only: links are
minted in the case's result and by ``links``, never mailed.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from kernel.errors import BadInput, ExportError
from kernel.ids import new_case_id, validate_tenant_id
from kernel.settings import Settings
from notify import Delivery, PackageFile, SmtpConfig, notify_deletion, notify_export_ready
from sources.catalog_config import CatalogConfig
from sources.contacts import Contacts, ContactsRule, read_contacts
from storage.audit import AuditKind, AuditTrail, check_details
from storage.cases import Case, CaseStore, Hold, Step, iso, parse_iso

EARLY_STEPS = ("final_backup", "export", "export_notice")
STEPS = ("opened", *EARLY_STEPS, "deletion_notice", "purged")
DEFAULT_NOTICE_DAYS = 7
Emit = Callable[[str, str, dict[str, Any]], None]


def operator(name: str | None = None) -> str:
    """Who acts from the command line: ``--by`` or ``operator:<login>``."""
    if name:
        return check_actor(name)
    try:
        return check_actor(f"operator:{getpass.getuser()}")
    except (KeyError, OSError, BadInput):  # no usable login name (a container, say)
        return "operator"


def check_actor(actor: str) -> str:
    """``actor`` unchanged, or ``BadInput`` before anything is written: the audit trail would
    refuse it after the fact (1-200 printable characters, never a link)."""
    if not isinstance(actor, str) or not actor or len(actor) > 200 or not actor.isprintable():
        raise BadInput(f"invalid actor {actor!r}: use 1-200 printable characters")
    check_details({"actor": actor})
    return actor


def _no_emit(_name: str, _tenant: str, _payload: dict[str, Any]) -> None:
    """Outside Prefect nobody listens for events."""


@dataclass
class CaseDesk:
    """What every case and purge step needs: settings, the case store, the audit trail, the
    clock (driven by tests) and where Prefect events go."""

    settings: Settings
    cases: CaseStore
    audit: AuditTrail
    clock: Callable[[], datetime]
    emit: Emit = field(default=_no_emit)

    @classmethod
    def open(cls, settings: Settings, now: datetime | None = None,
             emit: Emit | None = None) -> CaseDesk:
        """Stores on the control database; ``now`` freezes the clock (tests, replays)."""
        def clock() -> datetime:
            return now if now is not None else datetime.now(UTC)

        url = settings.resolved_control_url()
        cases = CaseStore(url)
        try:
            audit = AuditTrail(url, clock=clock)
        except BaseException:
            cases.close()
            raise
        return cls(settings, cases, audit, clock, emit or _no_emit)

    def close(self) -> None:
        """Release the control database."""
        self.cases.close()
        self.audit.close()

    def now(self) -> datetime:
        """The desk's clock, in UTC, to the second."""
        return self.clock().astimezone(UTC).replace(microsecond=0)

    def done(self, case: Case, step: str, actor: str, **details: Any) -> Step:
        """Record ``step`` once (audit event and Prefect event only the first time)."""
        stored, new = self.cases.record_step(case, Step(step, iso(self.now()), actor, details))
        if new:
            facts = {k: v for k, v in details.items() if not isinstance(v, list | dict)}
            self.audit.record(AuditKind.CASE_STEP, case.tenant_id, actor, case_id=case.case_id,
                              step=step, **facts)
            self.emit(f"tenant.offboarding.{step}", case.tenant_id,
                      {"case_id": case.case_id, "step": step, **facts})
        return stored


@dataclass(frozen=True)
class CaseActions:
    """The heavy steps, as the flow module provides them (Prefect subflows)."""

    backup: Callable[[str], str]
    """tenant -> the id of a verified snapshot."""
    export: Callable[[str], dict[str, Any]]
    """tenant -> the export result (links included: for the caller, never for an email)."""
    links: Callable[[str, str], dict[str, Any]]
    """(tenant, export id) -> fresh links for a retained export."""
    purge: Callable[[Case, str], dict[str, Any]]
    """(case, actor) -> the signed certificate; the purge records the ``purged`` step."""


# -- opening and finding cases ---------------------------------------------------------------


def open_case_of(cases: CaseStore, tenant_id: str) -> Case | None:
    """The tenant's case not purged yet (the newest), if any."""
    for case in reversed(cases.cases(tenant_id)):
        if "purged" not in cases.steps(case.case_id):
            return case
    return None


def start_case(desk: CaseDesk, tenant_id: str, contract_end: date, actor: str, *,
               retention_days: int | None = None,
               notice_days: int = DEFAULT_NOTICE_DAYS) -> Case:
    """Open a case, or return the tenant's case with the same contract end (open or closed).

    Raises:
        BadInput: an open case with another contract end, or days out of range.
    """
    validate_tenant_id(tenant_id)
    check_actor(actor)
    retention = retention_days or desk.settings.export_retention_days
    if not 1 <= retention <= 3650 or not 1 <= notice_days <= 90:
        raise BadInput("retention days must be 1-3650 and notice days 1-90",
                       tenant_id=tenant_id)
    same = [c for c in desk.cases.cases(tenant_id) if c.contract_end == contract_end.isoformat()]
    if same:  # a rerun: resume the case (or find it closed), never open a second one
        return same[-1]
    current = open_case_of(desk.cases, tenant_id)
    if current is not None:
        raise BadInput(f"tenant {tenant_id!r} already has the open offboarding case "
                       f"{current.case_id} with contract end {current.contract_end}",
                       tenant_id=tenant_id)
    now = desk.now()
    due = datetime.combine(contract_end, time(0), UTC) + timedelta(days=retention)
    case = desk.cases.open_case(Case(
        new_case_id("O", now), tenant_id, contract_end.isoformat(), retention, notice_days,
        iso(due), iso(now), actor))
    desk.audit.record(AuditKind.CASE_STEP, tenant_id, actor, case_id=case.case_id,
                      step="opened", contract_end=case.contract_end,
                      retention_ends_at=case.purge_due)
    desk.emit("tenant.offboarding.opened", tenant_id,
              {"case_id": case.case_id, "retention_ends_at": case.purge_due})
    return case


# -- advancing a case ------------------------------------------------------------------------


def advance(desk: CaseDesk, case: Case, actions: CaseActions, actor: str, *,
            early: bool) -> dict[str, Any]:
    """Do every step of the case that is due now, each at most once.

    ``early``: also the steps of the case flow (final backup, export, export notice); the
    sweeper leaves a case whose early steps are missing alone ("stalled").

    Returns:
        ``{"case_id", "tenant_id", "outcome", "export"}``; ``export`` holds links (the fresh
        export, or fresh links to it) only when ``early``.
    """
    steps = desk.cases.steps(case.case_id)
    report: dict[str, Any] = {"case_id": case.case_id, "tenant_id": case.tenant_id,
                              "export": None}
    if "purged" in steps:
        return {**report, "outcome": "closed"}
    if not early and any(s not in steps for s in EARLY_STEPS):
        return {**report, "outcome": "stalled"}
    if early:
        report["export"] = _early_steps(desk, case, actions, actor, steps)
        steps = desk.cases.steps(case.case_id)
    if desk.cases.hold(case.tenant_id) is not None:
        return {**report, "outcome": "held"}
    now = desk.now()
    if "deletion_notice" not in steps:
        if now < notice_due(case):
            return {**report, "outcome": "waiting"}
        steps["deletion_notice"] = _send_deletion_notice(desk, case, steps["export"], actor)
    if now < purge_at(case, steps):
        return {**report, "outcome": "waiting"}
    certificate = actions.purge(case, actor)
    return {**report, "outcome": "purged", "certificate_id": certificate["certificate_id"]}


def _early_steps(desk: CaseDesk, case: Case, actions: CaseActions, actor: str,
                 steps: dict[str, Step]) -> dict[str, Any] | None:
    tenant = case.tenant_id
    if "final_backup" not in steps:
        desk.done(case, "final_backup", actor, snapshot_id=actions.backup(tenant))
    links: dict[str, Any] | None = None
    if "export" in steps:
        export = steps["export"]
        try:  # fresh links for as long as the package exists
            links = actions.links(tenant, export.details["export_id"])
        except ExportError:
            links = None
    else:
        links = actions.export(tenant)
        files = [[f["path"], f["bytes"]] for f in links["files"]]
        total = sum(size for _, size in files)
        export = desk.done(case, "export", actor, export_id=links["export_id"],
                           created_at=links["created_at"], files=files, files_count=len(files),
                           bytes=total)
        desk.emit("tenant.export.ready", tenant, {"case_id": case.case_id,
                                                  "export_id": links["export_id"],
                                                  "files_count": len(files), "bytes": total})
    if "export_notice" not in steps:
        contacts = tenant_contacts(desk.settings, tenant)
        delivery = notify_export_ready(
            SmtpConfig.from_settings(desk.settings), contacts.addresses, tenant_id=tenant,
            export_id=export.details["export_id"],
            files=[PackageFile(path, size) for path, size in export.details["files"]],
            delete_on=parse_iso(case.purge_due), language=contacts.language)
        _notified(desk, case, "export_notice", actor, delivery)
    return links


def tenant_contacts(settings: Settings, tenant_id: str) -> Contacts:
    """The tenant's authorised contacts and their language, read now from the platform
    database (never stored: addresses are personal data)."""
    from sources.database import open_engine  # noqa: PLC0415 - Arrow: not for `offboard status`

    engine = open_engine(settings.resolved_source_url())
    try:
        return read_contacts(engine, contacts_rule(settings), tenant_id)
    finally:
        engine.dispose()


def contacts_rule(settings: Settings) -> ContactsRule:
    """Where the contacts are: the catalog's ``[contacts]`` section (defaults otherwise)."""
    return CatalogConfig.load(settings.catalog).contacts


def _notified(desk: CaseDesk, case: Case, step: str, actor: str, delivery: Delivery,
              **details: Any) -> Step:
    """A notice step, with the delivery's outcome (counts only: addresses stay out)."""
    desk.audit.record(AuditKind.NOTIFICATION_SENT, case.tenant_id, actor,
                      case_id=case.case_id, notice=delivery.kind, sent=delivery.sent,
                      recipients_count=delivery.recipients, outcome=delivery.reason)
    return desk.done(case, step, actor, sent=delivery.sent, recipients_count=delivery.recipients,
                     outcome=delivery.reason, **details)


def _send_deletion_notice(desk: CaseDesk, case: Case, export: Step, actor: str) -> Step:
    """Announce the purge: on the retention end, or ``notice_days`` from now if that is later
    (a late notice never shortens the client's warning)."""
    announced = max(parse_iso(case.purge_due),
                    desk.now() + timedelta(days=case.notice_days))
    contacts = tenant_contacts(desk.settings, case.tenant_id)
    delivery = notify_deletion(
        SmtpConfig.from_settings(desk.settings), contacts.addresses, tenant_id=case.tenant_id,
        delete_on=announced, contract_end=date.fromisoformat(case.contract_end),
        export_id=export.details.get("export_id"), language=contacts.language)
    return _notified(desk, case, "deletion_notice", actor, delivery, purge_at=iso(announced))


def notice_due(case: Case) -> datetime:
    """When the deletion notice goes out."""
    return parse_iso(case.purge_due) - timedelta(days=case.notice_days)


def purge_at(case: Case, steps: dict[str, Step]) -> datetime:
    """The purge date announced by the notice (the retention end before any notice)."""
    notice = steps.get("deletion_notice")
    return parse_iso(notice.details["purge_at"]) if notice else parse_iso(case.purge_due)


# -- where a case stands ---------------------------------------------------------------------


def case_status(cases: CaseStore, case: Case) -> dict[str, Any]:
    """Steps done (with times), the next step and its date, the hold: ``offboard status``."""
    steps = cases.steps(case.case_id)
    hold = cases.hold(case.tenant_id)
    purged = steps.get("purged")
    return {
        "tenant_id": case.tenant_id, "case_id": case.case_id,
        "state": _state(steps, hold), "contract_end": case.contract_end,
        "retention_days": case.retention_days, "retention_ends_at": case.purge_due,
        "notice_days": case.notice_days,
        "steps": [{"step": s.step, "at": s.at, "by": s.actor, **_shown(s.details)}
                  for s in sorted(steps.values(), key=lambda s: STEPS.index(s.step))],
        "next_step": _next(case, steps, hold),
        "hold": None if hold is None else {"reason": hold.reason, "since": hold.since,
                                           "by": hold.by},
        "certificate_id": purged.details.get("certificate_id") if purged else None,
    }


def _shown(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if k != "files"}


def _state(steps: dict[str, Step], hold: Hold | None) -> str:
    if "purged" in steps:
        return "closed"
    if hold is not None:
        return "held"
    return "in progress" if any(s not in steps for s in EARLY_STEPS) else "waiting"


def _next(case: Case, steps: dict[str, Step], hold: Hold | None) -> dict[str, Any] | None:
    missing = next((s for s in EARLY_STEPS if s not in steps), None)
    if missing is not None:
        return {"step": missing, "due_at": case.opened_at,
                "by": "the case flow: run `tenant-export offboard "
                      f"{case.tenant_id} --contract-end {case.contract_end}` to resume"}
    if "deletion_notice" not in steps:
        return {"step": "deletion_notice", "due_at": iso(notice_due(case)),
                "by": "the daily offboarding sweeper"}
    if "purged" not in steps:
        blocked = {"blocked_by": f"legal hold: {hold.reason}"} if hold else {}
        return {"step": "purged", "due_at": iso(purge_at(case, steps)),
                "by": "the daily offboarding sweeper", **blocked}
    return None


# -- legal hold ------------------------------------------------------------------------------


def set_hold(desk: CaseDesk, tenant_id: str, reason: str, actor: str) -> dict[str, Any]:
    """Put the tenant on legal hold (purge refused); audited once."""
    check_details({"reason": reason})  # refused by the audit trail: refuse before writing
    hold, new = desk.cases.set_hold(validate_tenant_id(tenant_id), reason, check_actor(actor),
                                    desk.now())
    if new:
        desk.audit.record(AuditKind.HOLD_SET, tenant_id, actor, reason=hold.reason)
    return {"tenant_id": tenant_id, "hold": "set", "reason": hold.reason, "since": hold.since,
            "by": hold.by}


def release_hold(desk: CaseDesk, tenant_id: str, actor: str) -> dict[str, Any]:
    """Release the tenant's legal hold, recording who and when; audited."""
    hold = desk.cases.release_hold(validate_tenant_id(tenant_id), check_actor(actor),
                                   desk.now())
    desk.audit.record(AuditKind.HOLD_RELEASED, tenant_id, actor, reason=hold.reason,
                      held_since=hold.since)
    return {"tenant_id": tenant_id, "hold": "released", "reason": hold.reason,
            "since": hold.since, "released_at": iso(desk.now()), "by": actor}

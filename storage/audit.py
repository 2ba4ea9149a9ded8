"""The audit trail: who did what to which tenant, append-only and hash-chained.

Each event's hash is SHA-256 over a canonical encoding of the event and the previous event's
hash, so altering or removing a row breaks the chain at that row. A separately stored head
(event count and last hash), moved forward in the same transaction as each append, catches the
removal of the last rows or of all of them. Triggers refuse UPDATE, DELETE (and TRUNCATE on
PostgreSQL); the chain catches what someone who drops the triggers does. Someone who can
rewrite both tables consistently is caught only by an external anchor (a head exported
elsewhere, or embedded in a deletion certificate): ``verify(anchors=...)``. The encoding and
these limits are written down in ``docs/offboarding.md``.

Details never carry a link or a secret: ``check_details`` refuses URLs with a query string or
credentials, S3 signature parameters, and keys named like secrets.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from kernel.dburl import error_reason
from kernel.errors import BadInput, ControlDbError
from kernel.ids import validate_tenant_id
from storage.control import open_control
from storage.signing import canonical_json

GENESIS_HASH = "0" * 64
HASH_DOMAIN = b"tenant-export/audit/v1\n"
MAX_DETAILS_BYTES = 8192

metadata = MetaData()
events_table = Table(
    "audit_events", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", String(40), nullable=False),
    Column("tenant_id", String(200), nullable=True, index=True),
    Column("kind", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
head_table = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("event_count", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("updated_at", String(40), nullable=False),
    CheckConstraint("id = 1", name="audit_head_single_row"),
)

_REFUSE = "the audit trail is append-only"
_GUARDS = {
    ("sqlite", "audit_events"): [
        f"CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events "
        f"BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END",
        f"CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events "
        f"BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END",
    ],
    ("sqlite", "audit_head"): [
        f"CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON audit_head "
        f"BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_head_forward_only BEFORE UPDATE ON audit_head "
        "WHEN NEW.event_count != OLD.event_count + 1 OR NEW.id != OLD.id "
        "BEGIN SELECT RAISE(ABORT, 'the audit head only moves forward'); END",
    ],
    ("postgresql", "audit_events"): [
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{_REFUSE}'; END $$",
        "CREATE OR REPLACE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON "
        "audit_events FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        "CREATE OR REPLACE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    ],
    ("postgresql", "audit_head"): [
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{_REFUSE}'; END $$",
        "CREATE OR REPLACE FUNCTION audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN IF NEW.event_count <> OLD.event_count + 1 OR NEW.id <> OLD.id THEN "
        "RAISE EXCEPTION 'the audit head only moves forward'; END IF; RETURN NEW; END $$",
        "CREATE OR REPLACE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
        "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        "CREATE OR REPLACE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
        "CREATE OR REPLACE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head "
        "FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only()",
    ],
}


@event.listens_for(events_table, "after_create")
@event.listens_for(head_table, "after_create")
def _guard(target: Table, connection: Connection, **_: Any) -> None:
    """Triggers born with their table; the head row too (a head missing later is tampering)."""
    if target is head_table:
        connection.execute(insert(head_table).values(
            id=1, event_count=0, last_hash=GENESIS_HASH, updated_at=_iso(datetime.now(UTC))))
    for ddl in _GUARDS[(connection.dialect.name, target.name)]:
        connection.execute(text(ddl))


class AuditKind(StrEnum):
    """The kinds of event the pipeline records (any dotted lowercase name is accepted)."""

    EXPORT_REQUESTED = "export.requested"
    EXPORT_COMPLETED = "export.completed"
    EXPORT_FAILED = "export.failed"
    EXPORT_DELETED = "export.deleted"
    LINKS_MINTED = "links.minted"
    DOWNLOAD = "download"
    BACKUP_COMPLETED = "backup.completed"
    BACKUP_FAILED = "backup.failed"
    RESTORE_COMPLETED = "restore.completed"
    RESTORE_FAILED = "restore.failed"
    PRUNE = "prune"
    PURGE_STARTED = "purge.started"
    PURGE_COMPLETED = "purge.completed"
    PURGE_FAILED = "purge.failed"
    CERTIFICATE_ISSUED = "certificate.issued"
    HOLD_SET = "hold.set"
    HOLD_RELEASED = "hold.released"
    MIGRATION_ENTRY = "migration.entry"
    CASE_STEP = "case.step"
    NOTIFICATION_SENT = "notification.sent"
    KEY_ROTATED = "key.rotated"


@dataclass(frozen=True)
class AuditEvent:
    """One stored event; ``hash`` chains it to the event before."""

    seq: int
    recorded_at: str
    tenant_id: str | None
    kind: str
    actor: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as ``audit TENANT --json`` prints it."""
        return asdict(self)


@dataclass(frozen=True)
class AuditAnchor:
    """A (seq, hash) pair kept outside the control database: the trail must still contain it."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, value: str) -> AuditAnchor:
        """``SEQ:HASH`` as ``audit head`` prints it."""
        seq, _, digest = value.partition(":")
        if not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BadInput(f"invalid audit anchor {value!r}: expected SEQ:HASH (64 hex digits)")
        return cls(int(seq), digest)

    def text(self) -> str:
        """``SEQ:HASH``."""
        return f"{self.seq}:{self.hash}"


@dataclass(frozen=True)
class AuditHead:
    """How many events the trail holds and the hash of the last one."""

    event_count: int
    last_hash: str
    updated_at: str

    def anchor(self) -> AuditAnchor:
        """The head as an external anchor (embed it in certificates, export it periodically)."""
        return AuditAnchor(self.event_count, self.last_hash)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the ``SEQ:HASH`` anchor string."""
        return {**asdict(self), "anchor": self.anchor().text()}


@dataclass(frozen=True)
class AuditReport:
    """The outcome of ``verify``: ``first_bad_seq`` names the first event that fails."""

    ok: bool
    events: int
    head_count: int | None
    first_bad_seq: int | None = None
    problem: str | None = None

    def line(self) -> str:
        """One line for the CLI."""
        if self.ok:
            return f"audit trail intact: {self.events} events, chain and head agree"
        return f"audit trail broken at event {self.first_bad_seq}: {self.problem}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def event_hash(seq: int, recorded_at: str, tenant_id: str | None, kind: str, actor: str,
               details: str, prev_hash: str) -> str:
    """SHA-256 (hex) of the domain prefix and the canonical JSON of the stored columns.

    ``details`` is the stored text itself, so any byte changed in it changes the hash.
    """
    columns = {"seq": seq, "recorded_at": recorded_at, "tenant_id": tenant_id, "kind": kind,
               "actor": actor, "details": details, "prev_hash": prev_hash}
    return hashlib.sha256(HASH_DOMAIN + canonical_json(columns)).hexdigest()


_KIND_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_SECRET_WORDS = {"url", "urls", "uri", "uris", "link", "links", "password", "passwd", "secret",
                 "secrets", "signature", "credential", "credentials", "token", "tokens"}
_FACT_SUFFIXES = ("_id", "_ids", "_count", "_ttl", "_seconds")  # token_id, link_ttl_seconds
_URL_QUERY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s]*[?#]")
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@]*:(?!\*\*\*@)[^\s/@]*@")
_SIGNED = re.compile(r"x-amz-|x-goog-|signature=|awsaccesskeyid=|[?&]sig=", re.IGNORECASE)


def check_details(details: dict[str, Any]) -> None:
    """Refuse details that could carry a link or a secret (``BadInput`` naming the field).

    Refused: keys containing a word such as url, link, token, password, secret, signature
    (keys ending in _id, _ids, _count, _ttl, _seconds are facts about them, allowed); string
    values holding a URL with a query
    string or fragment, a URL with a password, or S3/GCS signature parameters.
    """
    _check_detail(details, "details")
    if len(canonical_json(details, allow_floats=True)) > MAX_DETAILS_BYTES:
        raise BadInput(f"audit details exceed {MAX_DETAILS_BYTES} bytes: record facts, not "
                       "content")


def _check_detail(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
                raise BadInput(f"audit {path}: key {key!r} is not a plain identifier")
            words = set(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower().split("_"))
            if words & _SECRET_WORDS and not key.lower().endswith(_FACT_SUFFIXES):
                raise BadInput(f"audit {path}.{key}: a key named like a link or a secret is "
                               "refused (record ids, counts and TTLs, never the link itself)")
            _check_detail(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_detail(item, f"{path}[{index}]")
    elif isinstance(value, str) and (
            _URL_QUERY.search(value) or _URL_USERINFO.search(value) or _SIGNED.search(value)):
        raise BadInput(f"audit {path}: looks like a signed link or a URL with a query string "
                       "or a password; the audit trail never stores links or secrets")


def _check_text(name: str, value: str) -> None:
    if not value or len(value) > 200 or not value.isprintable():
        raise BadInput(f"audit {name} must be 1-200 printable characters, got {value!r}")
    _check_detail(value, name)


class AuditTrail:
    """Append and read audit events in the control database; ``verify`` checks the chain."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = open_control(url, metadata)
        self._sqlite = self._engine.dialect.name == "sqlite"
        self._clock = clock or (lambda: datetime.now(UTC))

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def record(self, kind: str, tenant_id: str | None, actor: str, **details: Any) -> AuditEvent:
        """Append one event; concurrent appends (threads, processes) queue on the head row.

        Args:
            kind: dotted lowercase name, e.g. ``AuditKind.LINKS_MINTED``.
            tenant_id: the tenant concerned, None for installation-wide events.
            actor: who: an operator name, ``"schedule"``, a portal contact's email.
            details: JSON values (ids, counts, TTLs); never a URL or a secret.

        Raises:
            BadInput: an invalid kind, tenant id, actor or detail (nothing is written).
            ControlDbError: the database refused, or the head row is missing (tampering).
        """
        if not isinstance(kind, str) or len(kind) > 64 or not _KIND_RE.fullmatch(kind):
            raise BadInput(f"invalid audit event kind {kind!r}: use dotted lowercase words")
        if tenant_id is not None:
            validate_tenant_id(tenant_id)
        _check_text("actor", actor)
        check_details(details)
        stored = canonical_json(details, allow_floats=True).decode("utf-8")
        try:
            with self._transaction(write=True) as conn:
                head = conn.execute(select(head_table).where(head_table.c.id == 1)
                                    .with_for_update()).one_or_none()
                if head is None:
                    raise ControlDbError("the audit head row is missing: the audit trail has "
                                         "been tampered with (run tenant-export audit verify)",
                                         tenant_id=tenant_id)
                seq, at = head.event_count + 1, _iso(self._clock())
                digest = event_hash(seq, at, tenant_id, str(kind), actor, stored, head.last_hash)
                conn.execute(insert(events_table).values(
                    seq=seq, recorded_at=at, tenant_id=tenant_id, kind=str(kind), actor=actor,
                    details=stored, prev_hash=head.last_hash, hash=digest))
                conn.execute(update(head_table).where(head_table.c.id == 1).values(
                    event_count=seq, last_hash=digest, updated_at=at))
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot record audit event {kind}: {error_reason(err)}",
                                 tenant_id=tenant_id) from err
        return AuditEvent(seq, at, tenant_id, str(kind), actor, json.loads(stored),
                          head.last_hash, digest)

    def events(self, tenant_id: str | None) -> list[AuditEvent]:
        """A tenant's events in order (None: the installation-wide ones)."""
        if tenant_id is not None:
            validate_tenant_id(tenant_id)
        column = events_table.c.tenant_id
        where = column.is_(None) if tenant_id is None else column == tenant_id
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(events_table).where(where)
                                    .order_by(events_table.c.seq)).all()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read the audit trail: {error_reason(err)}",
                                 tenant_id=tenant_id) from err
        return [_event(row) for row in rows]

    def head(self) -> AuditHead:
        """The current head (raises ``ControlDbError`` when the head row is gone)."""
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(head_table).where(head_table.c.id == 1)).one_or_none()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read the audit head: {error_reason(err)}") from err
        if row is None:
            raise ControlDbError("the audit head row is missing: the audit trail has been "
                                 "tampered with")
        return AuditHead(row.event_count, row.last_hash, row.updated_at)

    def verify(self, anchors: Sequence[AuditAnchor] = ()) -> AuditReport:
        """Recompute the whole chain in one consistent snapshot, streaming the rows.

        Args:
            anchors: heads kept elsewhere; each must still be in the chain with its hash.
        """
        try:
            with self._transaction(write=False) as conn:
                head = conn.execute(select(head_table).where(head_table.c.id == 1)).one_or_none()
                rows = conn.execution_options(yield_per=1000).execute(
                    select(events_table).order_by(events_table.c.seq))
                return _check_chain(rows, head, {a.seq: a.hash for a in anchors})
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read the audit trail: {error_reason(err)}") from err

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        """SQLite: an explicit BEGIN IMMEDIATE (writers queue) or BEGIN (a read snapshot).
        PostgreSQL: the head row is locked FOR UPDATE; reads run REPEATABLE READ."""
        with self._engine.connect() as conn:
            if not self._sqlite:
                if not write:
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
                return
            conn.execution_options(isolation_level="AUTOCOMMIT")  # we issue BEGIN ourselves
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                if conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")


def _check_chain(rows: Any, head: Any, anchors: dict[int, str]) -> AuditReport:
    expected, prev = 1, GENESIS_HASH
    head_count = None if head is None else int(head.event_count)

    def bad(seq: int, problem: str) -> AuditReport:
        return AuditReport(False, expected - 1, head_count, seq, problem)

    for row in rows:
        if row.seq != expected:
            return bad(expected, f"event {expected} is missing (the next stored is {row.seq})")
        if row.prev_hash != prev:
            return bad(row.seq, f"its previous hash does not match event {row.seq - 1}'s hash")
        if event_hash(row.seq, row.recorded_at, row.tenant_id, row.kind, row.actor, row.details,
                      row.prev_hash) != row.hash:
            return bad(row.seq, "its content does not match its hash (the row was altered)")
        if anchors.get(row.seq, row.hash) != row.hash:
            return bad(row.seq, "its hash differs from the external anchor (the trail was "
                       "rewritten)")
        prev, expected = row.hash, expected + 1
    count = expected - 1
    beyond = [seq for seq in anchors if seq > count]
    if beyond:
        return bad(count + 1, f"an external anchor names event {min(beyond)}, but the trail "
                   f"ends at {count} (events were removed)")
    if head is None:
        return bad(count + 1, "the head row is missing")
    if count < head.event_count:
        return bad(count + 1, f"events {count + 1}..{head.event_count} are missing (the head "
                   f"records {head.event_count})")
    if count > head.event_count:
        return bad(head.event_count + 1, f"the head records {head.event_count} events, the "
                   f"trail holds {count} (events added outside the trail)")
    if head.last_hash != prev:
        return bad(count, "the head's hash does not match the last event")
    return AuditReport(True, count, head_count)


def _event(row: Any) -> AuditEvent:
    return AuditEvent(row.seq, row.recorded_at, row.tenant_id, row.kind, row.actor,
                      json.loads(row.details), row.prev_hash, row.hash)


def _iso(moment: datetime) -> str:
    """UTC, microseconds, ``+00:00``: one fixed form, since the text is hashed."""
    if moment.tzinfo is None:
        raise BadInput("audit times must carry a time zone")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")

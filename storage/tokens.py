"""Portal contact tokens and the browser sessions opened with them, in the control database.

A token belongs to one tenant and one contact (an email address); a tenant has tokens for at
most two contacts at a time (the authorised support contacts of the terms, Annex 1). The token
text ``tep_<token id>_<secret>`` is shown once when issued; only its SHA-256 is stored. The
secret carries 256 random bits, so a plain hash is enough: there is nothing to guess that a
slow password hash would protect. Tokens expire and can be revoked; a revoked or expired
token also ends every session opened with it. Session ids are random too and stored hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from kernel.dburl import error_reason
from kernel.errors import BadInput, ControlDbError
from kernel.ids import validate_tenant_id
from kernel.timeparse import shown
from storage.control import open_control

TOKEN_PREFIX = "tep"  # noqa: S105 - the visible prefix of every token, not a secret
MAX_CONTACTS = 2
"""Contacts of one tenant holding an active token at once (terms, Annex 1)."""
DEFAULT_TOKEN_TTL_SECONDS = 90 * 86400
MAX_TOKEN_TTL_SECONDS = 366 * 86400
LAST_USED_PRECISION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token (not one write per request)."""

_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})")
_TOKEN_ID_RE = re.compile(r"[0-9a-f]{16}")
_SESSION_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}"
                      r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+")

metadata = MetaData()
tokens_table = Table(
    "portal_tokens", metadata,
    Column("token_id", String(16), primary_key=True),
    Column("tenant_id", String(200), nullable=False, index=True),
    Column("contact", String(254), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
    Column("revoked_at", String(40), nullable=True),
    Column("last_used_at", String(40), nullable=True),
)
sessions_table = Table(
    "portal_sessions", metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("token_id", String(16), nullable=False, index=True),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
)

TokenState = Literal["active", "expired", "revoked"]


def _iso(moment: datetime) -> str:
    """One fixed text form (UTC, seconds), so stored times also compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def check_contact(contact: str) -> str:
    """The address, lower-cased; ``BadInput`` for anything that is not one plain address."""
    address = contact.strip() if isinstance(contact, str) else ""
    if len(address) > 254 or not _ADDRESS.fullmatch(address):
        raise BadInput(f"invalid contact address {shown(contact)}: expected one address such "
                       "as name@example.org")
    return address.lower()


def check_token_id(token_id: str) -> str:
    """The id unchanged, or ``BadInput`` (16 hex digits, as ``portal token list`` shows)."""
    if not isinstance(token_id, str) or not _TOKEN_ID_RE.fullmatch(token_id):
        raise BadInput(f"invalid token id {shown(token_id)}: expected 16 hex digits, as "
                       "`tenant-export portal token list TENANT` shows")
    return token_id


@dataclass(frozen=True)
class TokenInfo:
    """What is known about a token (never the token itself)."""

    token_id: str
    tenant_id: str
    contact: str
    created_at: str
    expires_at: str
    revoked_at: str | None
    last_used_at: str | None

    def state(self, now: datetime) -> TokenState:
        """``revoked`` wins over ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.expires_at > _iso(now) else "expired"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """JSON-ready, with the state at ``now``."""
        return {**asdict(self), "state": self.state(now)}


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is shown once and stored nowhere."""

    info: TokenInfo
    token: str = field(repr=False)


@dataclass(frozen=True)
class Contact:
    """An authenticated caller: a contact of one tenant, through one token."""

    token_id: str
    tenant_id: str
    contact: str


class TokenStore:
    """Issue, check and revoke contact tokens; open and check browser sessions."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = open_control(url, metadata)
        self._clock = clock or (lambda: datetime.now(UTC))

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    # -- tokens --------------------------------------------------------------------------------

    def issue(self, tenant_id: str, contact: str,
              ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS) -> IssuedToken:
        """A new token for ``contact`` of ``tenant_id``, valid for ``ttl_seconds``.

        Raises:
            BadInput: a bad tenant id, address or TTL, or a third contact for the tenant.
            ControlDbError: the control database refused.
        """
        validate_tenant_id(tenant_id)
        address = check_contact(contact)
        if not isinstance(ttl_seconds, int) or not 0 < ttl_seconds <= MAX_TOKEN_TTL_SECONDS:
            raise BadInput(f"token lifetime {shown(ttl_seconds)} s: must be 1 s to "
                           f"{MAX_TOKEN_TTL_SECONDS // 86400} days", tenant_id=tenant_id)
        now = self._clock()
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        token = f"{TOKEN_PREFIX}_{token_id}_{secret}"
        info = TokenInfo(token_id, tenant_id, address, _iso(now),
                         _iso(now + timedelta(seconds=ttl_seconds)), None, None)
        with self._writing(f"issuing a token for tenant {tenant_id!r}") as conn:
            active = conn.execute(select(tokens_table.c.contact).distinct().where(
                tokens_table.c.tenant_id == tenant_id, tokens_table.c.revoked_at.is_(None),
                tokens_table.c.expires_at > _iso(now))).scalars().all()
            if address not in active and len(active) >= MAX_CONTACTS:
                raise BadInput(
                    f"tenant {tenant_id!r} already has active tokens for {len(active)} contacts "
                    f"({', '.join(sorted(active))}), the most its authorised contacts allow "
                    "(terms, Annex 1): revoke one contact's tokens first", tenant_id=tenant_id)
            conn.execute(insert(tokens_table).values(**asdict(info), token_hash=_digest(token)))
        return IssuedToken(info, token)

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token (again: no change) and end its sessions; ``BadInput`` if unknown."""
        check_token_id(token_id)
        with self._writing(f"revoking token {token_id}") as conn:
            conn.execute(update(tokens_table).where(
                tokens_table.c.token_id == token_id, tokens_table.c.revoked_at.is_(None),
            ).values(revoked_at=_iso(self._clock())))
            conn.execute(delete(sessions_table).where(sessions_table.c.token_id == token_id))
        found = self.get(token_id)
        if found is None:
            raise BadInput(f"no portal token {token_id}")
        return found

    def get(self, token_id: str) -> TokenInfo | None:
        """One token's record."""
        rows = self._read(tokens_table.c.token_id == token_id)
        return rows[0] if rows else None

    def tokens(self, tenant_id: str) -> list[TokenInfo]:
        """A tenant's tokens, oldest first (revoked and expired ones included)."""
        validate_tenant_id(tenant_id)
        return self._read(tokens_table.c.tenant_id == tenant_id)

    def authenticate(self, token: str) -> Contact | None:
        """The contact a presented token stands for, or None (malformed, unknown, wrong,
        revoked or expired: the caller answers 401 alike)."""
        match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            return None
        info = self._active(match.group(1), _digest(token))
        if info is None:
            return None
        self._touch(info)
        return Contact(info.token_id, info.tenant_id, info.contact)

    def _active(self, token_id: str, token_hash: str) -> TokenInfo | None:
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(tokens_table).where(
                    tokens_table.c.token_id == token_id)).one_or_none()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read portal tokens: {error_reason(err)}") from err
        if row is None or not hmac.compare_digest(row.token_hash, token_hash):
            return None
        info = _info(row)
        return info if info.state(self._clock()) == "active" else None

    def _touch(self, info: TokenInfo) -> None:
        now = self._clock()
        if info.last_used_at is not None and info.last_used_at > _iso(now - LAST_USED_PRECISION):
            return
        with self._writing("recording a token's use") as conn:
            conn.execute(update(tokens_table).where(tokens_table.c.token_id == info.token_id)
                         .values(last_used_at=_iso(now)))

    # -- sessions ------------------------------------------------------------------------------

    def open_session(self, contact: Contact, ttl_seconds: int) -> str:
        """A new session id for a signed-in browser (stored hashed); expired ones are dropped."""
        now = self._clock()
        session = secrets.token_urlsafe(32)
        with self._writing("opening a portal session") as conn:
            conn.execute(delete(sessions_table).where(sessions_table.c.expires_at <= _iso(now)))
            conn.execute(insert(sessions_table).values(
                session_hash=_digest(session), token_id=contact.token_id, created_at=_iso(now),
                expires_at=_iso(now + timedelta(seconds=ttl_seconds))))
        return session

    def session(self, session: str) -> Contact | None:
        """The contact of a live session whose token is still active, else None."""
        if not isinstance(session, str) or not _SESSION_RE.fullmatch(session):
            return None
        now = _iso(self._clock())
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(tokens_table).join(
                    sessions_table, sessions_table.c.token_id == tokens_table.c.token_id,
                ).where(sessions_table.c.session_hash == _digest(session),
                        sessions_table.c.expires_at > now)).one_or_none()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read portal sessions: {error_reason(err)}") from err
        if row is None or _info(row).state(self._clock()) != "active":
            return None
        return Contact(row.token_id, row.tenant_id, row.contact)

    def close_session(self, session: str) -> None:
        """Forget a session (signing out)."""
        if isinstance(session, str) and _SESSION_RE.fullmatch(session):
            with self._writing("closing a portal session") as conn:
                conn.execute(delete(sessions_table).where(
                    sessions_table.c.session_hash == _digest(session)))

    # -- plumbing ------------------------------------------------------------------------------

    def _read(self, where: Any) -> list[TokenInfo]:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(tokens_table).where(where).order_by(
                    tokens_table.c.created_at, tokens_table.c.token_id)).all()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read portal tokens: {error_reason(err)}") from err
        return [_info(row) for row in rows]

    @contextmanager
    def _writing(self, what: str) -> Iterator[Connection]:
        """One write transaction that queues behind other writers (SQLite: BEGIN IMMEDIATE;
        PostgreSQL: a transaction-scoped advisory lock), so the two-contact rule cannot be
        raced by two operators issuing at once."""
        try:
            with self._engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.exec_driver_sql("ROLLBACK")
                        raise
                    conn.exec_driver_sql("COMMIT")
                    return
                with conn.begin():
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('portal_tokens'))"))
                    yield conn
        except SQLAlchemyError as err:
            raise ControlDbError(f"control database: {what} failed: {error_reason(err)}"
                                 ) from err


def _info(row: Any) -> TokenInfo:
    return TokenInfo(row.token_id, row.tenant_id, row.contact, row.created_at, row.expires_at,
                     row.revoked_at, row.last_used_at)

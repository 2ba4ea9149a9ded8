"""The tenant's key record: every data key of the tenant, wrapped by the master key, with its
id, state and creation time, and a MAC over the whole record (``docs/backup-format.md`` §3).

Each wrapped key is bound to tenant, purpose and key id (AES-GCM AD or KMS encryption context);
the MAC, under a key derived from data key 1, binds the rest (which key is active, states,
times, the set of keys), so only a holder of the master key can write a record that opens.
Version-1 records (one key, no MAC) are read as a record holding data key 1.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kernel.errors import VerificationFailed
from storage.datakeys import FIRST_KEY_ID, MAX_KEY_ID, DataKeys
from storage.wrapping import (
    ALG_KMS,
    ALG_LOCAL,
    MASTER_KEY_VARIABLE,
    KeyWrapper,
    WrapContext,
    Wrapped,
)

RECORD_VERSION = 2
LEGACY_RECORD_VERSION = 1
ACTIVE, RETIRED = "active", "retired"
STATES = (ACTIVE, RETIRED)
MAC_BYTES = 32


def now_text() -> str:
    """UTC now as records store times: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Entry:
    """One data key as the record lists it."""

    id: int
    state: str
    created_at: str
    wrapped: Wrapped


@dataclass(frozen=True)
class KeyRecord:
    """A parsed record (not yet authenticated: :func:`open_record` does that)."""

    tenant_id: str
    key_id: str  # the master key (KEK) that wrapped every entry
    alg: str
    created_at: str
    updated_at: str
    entries: tuple[Entry, ...]
    version: int = RECORD_VERSION
    mac: bytes = b""

    @property
    def active(self) -> int:
        return next(e.id for e in self.entries if e.state == ACTIVE)

    def summary(self) -> dict[str, Any]:
        """What an operator (``keys show``) or a certificate may see: no key material."""
        return {"tenant_id": self.tenant_id, "version": self.version, "key_id": self.key_id,
                "alg": self.alg, "created_at": self.created_at, "updated_at": self.updated_at,
                "data_keys": [{"id": e.id, "state": e.state, "created_at": e.created_at}
                              for e in self.entries]}

    def body(self) -> dict[str, Any]:
        """The record as stored, without its MAC (what the MAC covers)."""
        def entry(e: Entry) -> dict[str, Any]:
            fields: dict[str, Any] = {"id": e.id, "state": e.state, "created_at": e.created_at}
            if e.wrapped.nonce is not None:
                fields["nonce"] = _b64(e.wrapped.nonce)
            fields["wrapped"] = _b64(e.wrapped.wrapped)
            return fields

        return {"version": self.version, "tenant_id": self.tenant_id, "key_id": self.key_id,
                "alg": self.alg, "created_at": self.created_at, "updated_at": self.updated_at,
                "data_keys": [entry(e) for e in self.entries]}


def canonical(body: dict[str, Any]) -> bytes:
    """The bytes the MAC covers: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_mac(keys: DataKeys, record: KeyRecord) -> bytes:
    """``HMAC-SHA256(key = HKDF(data key 1, "tenant-export/v2/key-record" NUL tenant),
    message = canonical(body))``."""
    return hmac.new(keys.record_mac_key(record.tenant_id), canonical(record.body()),
                    hashlib.sha256).digest()


def encode(record: KeyRecord, keys: DataKeys) -> bytes:
    """The record as stored: indented JSON with its MAC (``record.mac`` is ignored)."""
    body = record.body()
    body["mac"] = _b64(record_mac(keys, record))
    return json.dumps(body, indent=2).encode("utf-8") + b"\n"


def seal(wrapper: KeyWrapper, tenant_id: str, keys: DataKeys, states: dict[int, str],
         created: dict[int, str], created_at: str | None = None) -> bytes:
    """A new record of ``keys`` wrapped by ``wrapper`` (every key wrapped afresh)."""
    now = now_text()
    entries = tuple(Entry(i, states[i], created[i],
                          wrapper.wrap(keys.key(i), WrapContext(tenant_id, i)))
                    for i in keys.ids)
    record = KeyRecord(tenant_id, wrapper.key_id, wrapper.alg, created_at or now, now, entries)
    return encode(record, keys)


def parse(blob: bytes, tenant_id: str) -> KeyRecord:
    """Parse a record (version 1 or 2) and check its structure; nothing is authenticated yet.

    Raises:
        VerificationFailed: malformed, an unknown version or alg, or another tenant's record.
    """
    try:
        data = json.loads(blob)
        record = _parse_v1(data) if data.get("version") == LEGACY_RECORD_VERSION else (
            _parse_v2(data))
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as err:
        raise VerificationFailed(f"key record is malformed ({err})", tenant_id=tenant_id) from None
    if record.tenant_id != tenant_id:
        raise VerificationFailed(f"key record belongs to tenant {record.tenant_id!r}, not "
                                 f"{tenant_id!r}", tenant_id=tenant_id)
    return record


def _parse_v1(data: dict[str, Any]) -> KeyRecord:
    if data["alg"] != ALG_LOCAL:
        raise ValueError(f"version-1 alg {data['alg']!r} is not {ALG_LOCAL}")
    wrapped = Wrapped(_unb64(data["wrapped"]), _unb64(data["nonce"]))
    created = str(data.get("created_at") or "")
    return KeyRecord(str(data["tenant_id"]), str(data["key_id"]), ALG_LOCAL, created, created,
                     (Entry(FIRST_KEY_ID, ACTIVE, created, wrapped),), LEGACY_RECORD_VERSION)


def _parse_v2(data: dict[str, Any]) -> KeyRecord:
    if data["version"] != RECORD_VERSION:
        raise ValueError(f"version {data['version']!r} is not supported (1 or 2)")
    alg = data["alg"]
    if alg not in (ALG_LOCAL, ALG_KMS):
        raise ValueError(f"alg {alg!r} is not {ALG_LOCAL} or {ALG_KMS}")
    entries = []
    for item in data["data_keys"]:
        key_id, state = item["id"], item["state"]
        if type(key_id) is not int or not FIRST_KEY_ID <= key_id <= MAX_KEY_ID:
            raise ValueError(f"data key id {key_id!r} is not 1..{MAX_KEY_ID}")
        if state not in STATES:
            raise ValueError(f"data key {key_id} has state {state!r}, not one of {STATES}")
        nonce = _unb64(item["nonce"]) if alg == ALG_LOCAL else None
        entries.append(Entry(key_id, state, str(item["created_at"]),
                             Wrapped(_unb64(item["wrapped"]), nonce)))
    ids = [e.id for e in entries]
    if FIRST_KEY_ID not in ids or len(set(ids)) != len(ids):
        raise ValueError(f"data key ids {ids} must be unique and include {FIRST_KEY_ID}")
    if [e.state for e in entries].count(ACTIVE) != 1:
        raise ValueError("exactly one data key must be active")
    mac = _unb64(data["mac"])
    if len(mac) != MAC_BYTES:
        raise ValueError(f"mac has {len(mac)} bytes, not {MAC_BYTES}")
    return KeyRecord(str(data["tenant_id"]), str(data["key_id"]), alg, str(data["created_at"]),
                     str(data["updated_at"]), tuple(sorted(entries, key=lambda e: e.id)),
                     RECORD_VERSION, mac)


def pick_wrapper(record: KeyRecord, wrappers: Sequence[KeyWrapper]) -> KeyWrapper:
    """The wrapper whose master key wrapped the record, or a ``VerificationFailed`` naming the
    record's key id and every configured one (a backup made under one master key and read with
    another is refused here, before anything is decrypted)."""
    for wrapper in wrappers:
        if wrapper.key_id == record.key_id:
            return wrapper
    configured = ", ".join(w.key_id for w in wrappers) or "none"
    raise VerificationFailed(
        f"the key record of tenant {record.tenant_id!r} was wrapped by master key "
        f"{record.key_id}, but {MASTER_KEY_VARIABLE} is {configured}: set the master key it was "
        "made with (or rewrap the records, with the old key as the previous master key)",
        tenant_id=record.tenant_id)


def open_record(record: KeyRecord, wrapper: KeyWrapper) -> DataKeys:
    """Unwrap every data key and check the MAC: the record is then authentic.

    Raises:
        VerificationFailed: a key fails to unwrap (altered, moved from another tenant or id,
            wrong master key) or the MAC does not match (states, ids or times edited).
    """
    tenant = record.tenant_id
    keys = DataKeys({e.id: wrapper.unwrap(e.wrapped, WrapContext(
        tenant, None if record.version == LEGACY_RECORD_VERSION else e.id))
        for e in record.entries}, record.active)
    if record.version == RECORD_VERSION and not hmac.compare_digest(
            record.mac, record_mac(keys, record)):
        raise VerificationFailed(
            f"the key record of tenant {tenant!r} fails its MAC: it was changed outside "
            "tenant-export (a key's state, id or time edited, or entries swapped)",
            tenant_id=tenant)
    return keys


def rotated(record: KeyRecord, keys: DataKeys, new_key: bytes, wrapper: KeyWrapper
            ) -> tuple[bytes, DataKeys]:
    """The record with ``new_key`` added as the next id, active; the others retired."""
    new_id = max(keys.ids) + 1
    if new_id > MAX_KEY_ID:
        raise VerificationFailed(f"tenant {record.tenant_id!r} has used every data key id",
                                 tenant_id=record.tenant_id)
    grown = DataKeys({**keys.keys, new_id: new_key}, new_id)
    created = {e.id: e.created_at for e in record.entries} | {new_id: now_text()}
    states = dict.fromkeys(keys.ids, RETIRED) | {new_id: ACTIVE}
    entries = (*record.entries, Entry(new_id, ACTIVE, created[new_id], wrapper.wrap(
        new_key, WrapContext(record.tenant_id, new_id))))
    if record.version == LEGACY_RECORD_VERSION or record.key_id != wrapper.key_id:
        return seal(wrapper, record.tenant_id, grown, states, created, record.created_at), grown
    updated = replace(record, updated_at=now_text(), entries=tuple(
        replace(e, state=states[e.id]) for e in entries))
    return encode(updated, grown), grown


def rewrapped(record: KeyRecord, keys: DataKeys, wrapper: KeyWrapper) -> bytes:
    """The same keys, states and times, wrapped by ``wrapper`` (a version-1 record becomes
    version 2)."""
    return seal(wrapper, record.tenant_id, keys, {e.id: e.state for e in record.entries},
                {e.id: e.created_at for e in record.entries}, record.created_at)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)

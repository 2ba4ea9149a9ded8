"""Signed deletion certificates: Ed25519 over a canonical JSON encoding, verifiable offline.

The signature covers the certificate's JSON *value*, not the file's bytes: every field except
``signature`` is encoded as sorted-keys, compact, UTF-8 JSON (``canonical_json``; for the
documents allowed here this is RFC 8785 JCS) and signed with Ed25519. So a re-indented file
still verifies, while any changed key, value, added or removed field does not. The format is
specified in ``docs/offboarding.md``.

The signing key is ``TENANT_EXPORT_SIGNING_KEY`` (base64 of the raw 32-byte private key) or,
when unset, a key generated once and kept in the state directory with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import json
import math
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kernel.errors import BadInput, VerificationFailed
from kernel.ids import validate_tenant_id
from kernel.settings import Settings

FORMAT = "tenant-export/deletion-certificate"
VERSION = 1
KEY_FILE_NAME = "signing-key.ed25519"
SIGNING_KEY_VARIABLE = "TENANT_EXPORT_SIGNING_KEY"
MAX_SAFE_INTEGER = 2**53 - 1  # beyond it JavaScript (and JCS) would round the number
_RESERVED = ("format", "version", "key_id", "signature")
_REQUIRED = {"tenant_id": str, "issued_at": str, "deleted": dict}


def canonical_json(value: Any, *, allow_floats: bool = False) -> bytes:
    """Sorted-keys, compact, UTF-8 JSON: the bytes that are signed or hashed.

    Keys must be ASCII strings (so Python's key order equals JCS's UTF-16 order), integers
    within +-(2**53 - 1), strings valid Unicode; floats only with ``allow_floats`` (their text
    form differs between languages, so signed documents carry none).

    Raises:
        BadInput: a value outside these rules, named by its JSON path.
    """
    _check_value(value, "$", allow_floats)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return text.encode("utf-8")


def _check_value(value: Any, path: str, allow_floats: bool) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise BadInput(f"{path}: integer {value} is outside +-(2**53 - 1)")
    elif isinstance(value, float):
        if not allow_floats or not math.isfinite(value):
            raise BadInput(f"{path}: floating-point numbers are not allowed here")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"{path}: string is not valid Unicode") from None
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", allow_floats)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise BadInput(f"{path}: key {key!r} is not an ASCII string")
            _check_value(item, f"{path}.{key}", allow_floats)
    else:
        raise BadInput(f"{path}: {type(value).__name__} is not a JSON value")


# -- keys ------------------------------------------------------------------------------------

def key_id(public_key: Ed25519PublicKey) -> str:
    """``ed25519:`` + the first 16 bytes (hex) of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The public key to publish (SubjectPublicKeyInfo PEM, what OpenSSL and cryptography load)."""
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def public_key_base64(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, standard base64 (the other accepted published form)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """A published public key: PEM, or the raw 32 bytes in base64.

    Raises:
        BadInput: neither form, or not an Ed25519 key.
    """
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except ValueError as err:
            raise BadInput(f"public key is not a valid PEM key: {err}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise BadInput(f"public key is a {type(key).__name__}, not an Ed25519 key")
        return key
    raw = _strict_b64(text.decode("ascii", "replace"))
    if raw is None or len(raw) != 32:
        raise BadInput("public key is neither PEM nor base64 of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_signing_key(configured: str | None, state_dir: Path) -> Ed25519PrivateKey:
    """The certificate signing key: the configured one, else the state directory's (created once).

    Args:
        configured: ``Settings.signing_key_value()``: base64 of a raw 32-byte private key.
        state_dir: where the generated key lives (``signing-key.ed25519``, mode 0600).

    Raises:
        BadInput: a configured value or key file that is not a key, or a key file others can read.
    """
    if configured is not None:
        return _private_from_b64(configured, SIGNING_KEY_VARIABLE)
    path = state_dir / KEY_FILE_NAME
    if not path.exists():
        _create_key_file(path)
    return _read_key_file(path)


def signing_key_from_settings(settings: Settings) -> Ed25519PrivateKey:
    """``load_signing_key`` with this installation's settings."""
    return load_signing_key(settings.signing_key_value(), settings.state_dir)


def local_public_key(settings: Settings) -> Ed25519PublicKey | None:
    """This installation's public key, or None when no key is configured nor generated yet."""
    configured = settings.signing_key_value()
    if configured is None and not (settings.state_dir / KEY_FILE_NAME).exists():
        return None
    return signing_key_from_settings(settings).public_key()


def _private_from_b64(text: str, where: str) -> Ed25519PrivateKey:
    raw = _strict_b64(text.strip())
    if raw is None or len(raw) != 32:
        raise BadInput(f"{where} is not base64 of a raw 32-byte Ed25519 private key")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _create_key_file(path: Path) -> None:
    """Write a new key to a private temporary file, then link it into place.

    ``os.link`` fails if the name exists, so two processes starting at once agree on one key,
    and a reader never sees a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(raw) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path) -> Ed25519PrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise BadInput(f"signing key file {path} is readable by others (mode {mode:04o}): "
                       f"run chmod 600 {path}")
    return _private_from_b64(path.read_text("ascii", "replace"), f"signing key file {path}")


def _strict_b64(text: str) -> bytes | None:
    """Decoded standard base64, or None; only the canonical encoding of the bytes is accepted
    (otherwise a flipped padding bit would decode to the same signature)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


# -- certificates ----------------------------------------------------------------------------

def sign_certificate(key: Ed25519PrivateKey, document: dict[str, Any]) -> dict[str, Any]:
    """The signed certificate: ``document`` plus ``format``, ``version``, ``key_id``, ``signature``.

    Ed25519 is deterministic: signing the same document again gives the same certificate, so a
    purge that resumes after a crash can re-issue it without creating a second, different one.

    Args:
        key: the signing key (``signing_key_from_settings``).
        document: what was deleted; needs ``tenant_id`` (str), ``issued_at`` (ISO 8601 str) and
            ``deleted`` (object); no floats; must not carry the four fields above.

    Raises:
        BadInput: a missing or reserved field, or a value ``canonical_json`` refuses.
    """
    if not isinstance(document, dict):
        raise BadInput("a certificate document must be a JSON object")
    for name, kind in _REQUIRED.items():
        if not isinstance(document.get(name), kind):
            raise BadInput(f"a certificate needs {name!r} ({kind.__name__})")
    validate_tenant_id(document["tenant_id"])
    reserved = sorted(set(_RESERVED) & set(document))
    if reserved:
        raise BadInput(f"a certificate document must not set {', '.join(reserved)}: "
                       "sign_certificate adds them")
    public = key.public_key()
    unsigned = {**copy.deepcopy(document), "format": FORMAT, "version": VERSION,
                "key_id": key_id(public)}
    signature = key.sign(canonical_json(unsigned))
    return {**unsigned, "signature": base64.b64encode(signature).decode("ascii")}


def verify_certificate(doc: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    """Check a certificate against the published public key.

    Raises:
        VerificationFailed: the reason: not a certificate, an unknown format version, signed by
            another key, or a signature that does not match the content (something changed).
    """
    if not isinstance(doc, dict):
        raise VerificationFailed("not a deletion certificate: the document is not a JSON object")
    tenant = doc.get("tenant_id") if isinstance(doc.get("tenant_id"), str) else None
    if doc.get("format") != FORMAT:
        raise VerificationFailed(f"not a deletion certificate: format is {doc.get('format')!r}, "
                                 f"expected {FORMAT!r}", tenant_id=tenant)
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise VerificationFailed(f"unsupported certificate version {doc.get('version')!r} "
                                 f"(this tool reads version {VERSION})", tenant_id=tenant)
    expected = key_id(public_key)
    if doc.get("key_id") != expected:
        raise VerificationFailed(f"the certificate names key {doc.get('key_id')!r}, but the "
                                 f"public key given is {expected} (wrong key, or the key id "
                                 "was changed)", tenant_id=tenant)
    encoded = doc.get("signature")
    signature = _strict_b64(encoded) if isinstance(encoded, str) else None
    if signature is None or len(signature) != 64:
        raise VerificationFailed("the signature field is not base64 of a 64-byte Ed25519 "
                                 "signature", tenant_id=tenant)
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    try:
        public_key.verify(signature, canonical_json(unsigned))
    except BadInput as err:
        raise VerificationFailed(f"the certificate holds a value no signed certificate can "
                                 f"hold: {err}", tenant_id=tenant) from None
    except InvalidSignature:
        raise VerificationFailed("the signature does not match the content: the certificate "
                                 "was changed after it was signed", tenant_id=tenant) from None


def parse_certificate(data: bytes) -> dict[str, Any]:
    """A certificate file as a JSON object, read strictly (UTF-8, no duplicate keys, no NaN).

    Raises:
        VerificationFailed: the bytes are not such a document (a changed byte often does this).
    """
    try:
        text = data.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise VerificationFailed(f"not a valid certificate file: {err}") from None
    if not isinstance(doc, dict):
        raise VerificationFailed("not a valid certificate file: not a JSON object")
    return doc


def dump_certificate(doc: dict[str, Any]) -> bytes:
    """The file form: sorted keys, two-space indent, UTF-8, final newline."""
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")

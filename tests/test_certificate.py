"""Deletion certificates: Ed25519 over canonical JSON. Any changed byte of a certificate file is
detected (every position tried), equivalent JSON re-encodings are defined as the same
certificate, the signing key is configured or generated once with mode 0600, the CLI verifies
offline, and the documented example and offline snippet really work."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from kernel.errors import BadInput, VerificationFailed
from kernel.settings import Settings
from storage.signing import (
    FORMAT,
    KEY_FILE_NAME,
    canonical_json,
    dump_certificate,
    key_id,
    load_public_key,
    load_signing_key,
    local_public_key,
    parse_certificate,
    public_key_base64,
    public_key_pem,
    sign_certificate,
    signing_key_from_settings,
    verify_certificate,
)
from tenant_export.cli import app
from tests.lifecycle_workers import signing_key_id

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
DOCUMENT: dict[str, Any] = {
    "certificate_id": "D-20261226-5e1f0c2a",
    "tenant_id": "t-42",
    "case_id": "O-20261126-9b3c7d10",
    "issued_at": "2026-12-26T02:03:42Z",
    "deleted": {"export_packages": {"count": 2, "objects": 11, "bytes": 48211043},
                "data_keys": {"count": 2, "destroyed_at": "2026-12-26T02:03:40Z"}},
    "not_deleted": {"platform_database": "not touched: the platform's own job — déjà noté"},
    "audit_head": {"seq": 1843, "hash": "9f" * 32},
    "flags": [True, False, None],
}


def _check(data: bytes, public: Any = None) -> dict[str, Any]:
    doc = parse_certificate(data)
    verify_certificate(doc, public or KEY.public_key())
    return doc


def test_sign_and_verify() -> None:
    cert = sign_certificate(KEY, DOCUMENT)
    assert cert["format"] == FORMAT and cert["version"] == 1
    assert cert["key_id"] == key_id(KEY.public_key())
    assert re.fullmatch(r"ed25519:[0-9a-f]{32}", cert["key_id"])
    assert len(base64.b64decode(cert["signature"])) == 64
    verify_certificate(cert, KEY.public_key())
    assert _check(dump_certificate(cert)) == cert
    # deterministic: a resumed purge re-issues the identical certificate
    assert sign_certificate(KEY, dict(DOCUMENT)) == cert
    assert DOCUMENT.get("signature") is None  # the caller's document is left alone


def test_every_changed_byte_is_detected() -> None:
    """Each byte position of the file, flipped (XOR 1) and replaced by a space: the result
    verifies only when it is the same JSON value (a space for a newline); otherwise it fails,
    and every class of position (structure, key, value, key id, format, version, signature)
    fails for its own reason."""
    data = dump_certificate(sign_certificate(KEY, DOCUMENT))
    original = parse_certificate(data)
    reasons: set[str] = set()
    equivalent = 0
    for position in range(len(data)):
        for replacement in {data[position] ^ 1, ord(" ")} - {data[position]}:
            mutated = data[:position] + bytes([replacement]) + data[position + 1:]
            try:
                doc = _check(mutated)
            except VerificationFailed as err:
                reasons.add(str(err).split(":")[0].split(" (")[0])
                continue
            assert doc == original, f"byte {position} changed to {replacement!r} verified"
            assert chr(data[position]) in " \n" and replacement == ord(" ")
            equivalent += 1
    assert equivalent > 0  # whitespace between tokens is insignificant, by definition
    assert {"not a valid certificate file", "the signature does not match the content",
            "not a deletion certificate", "unsupported certificate version 0",
            "the certificate names key 'ed25519", "the signature field is not base64 of a "
            "64-byte Ed25519 signature"} <= reasons, reasons


def test_equivalent_encodings_are_the_same_certificate() -> None:
    cert = sign_certificate(KEY, DOCUMENT)
    compact = json.dumps(cert, separators=(",", ":")).encode()  # \u escapes, other key order
    assert b"\\u00e9" in compact
    assert _check(compact) == cert
    reordered = json.dumps(dict(reversed(list(cert.items()))), indent=4, ensure_ascii=False)
    assert _check(reordered.encode()) == cert


@pytest.mark.parametrize(("change", "reason"), [
    (lambda c: c["deleted"]["export_packages"].update(bytes=48211044), "does not match"),
    (lambda c: c.update(extra="x"), "does not match"),
    (lambda c: c.pop("case_id"), "does not match"),
    (lambda c: c.update(tenant_id="t-43"), "does not match"),
    (lambda c: c["deleted"].update(export_packages=1.5), "no signed certificate can hold"),
    (lambda c: c.update(version=2), "unsupported certificate version 2"),
    (lambda c: c.update(version=True), "unsupported certificate version True"),
    (lambda c: c.update(signature=c["signature"][:-4]), "not base64 of a 64-byte"),
    (lambda c: c.pop("signature"), "not base64 of a 64-byte"),
    (lambda c: c.update(format="something/else"), "not a deletion certificate"),
])
def test_changed_content_fails_with_its_reason(change: Any, reason: str) -> None:
    cert = sign_certificate(KEY, DOCUMENT)
    change(cert)
    with pytest.raises(VerificationFailed, match=reason):
        verify_certificate(cert, KEY.public_key())


def test_the_wrong_key_is_named() -> None:
    cert = sign_certificate(KEY, DOCUMENT)
    with pytest.raises(VerificationFailed, match=r"names key 'ed25519:.*public key given is"):
        verify_certificate(cert, OTHER.public_key())
    # a certificate re-labelled with the other key's id does not verify with that key either
    relabelled = {**cert, "key_id": key_id(OTHER.public_key())}
    with pytest.raises(VerificationFailed, match="does not match the content"):
        verify_certificate(relabelled, OTHER.public_key())


def test_a_padding_bit_of_the_signature_is_not_ignored() -> None:
    cert = sign_certificate(KEY, DOCUMENT)
    last = cert["signature"][-3]  # ...X== : X carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(last) ^ 1]
    forged = {**cert, "signature": cert["signature"][:-3] + twin + "=="}
    assert base64.b64decode(forged["signature"]) == base64.b64decode(cert["signature"])
    with pytest.raises(VerificationFailed, match="not base64"):
        verify_certificate(forged, KEY.public_key())


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"a": 1, "a": 2}', "duplicate key"),
    (b'{"a": NaN}', "NaN is not JSON"),
    (b"\xef\xbb\xbf{}", "not a valid certificate file"),
    (b"\xff{}", "not a valid certificate file"),
    (b"[1]", "not a JSON object"),
])
def test_files_are_read_strictly(data: bytes, reason: str) -> None:
    with pytest.raises(VerificationFailed, match=reason):
        parse_certificate(data)


@pytest.mark.parametrize(("document", "reason"), [
    ({k: v for k, v in DOCUMENT.items() if k != "tenant_id"}, "needs 'tenant_id'"),
    ({k: v for k, v in DOCUMENT.items() if k != "deleted"}, "needs 'deleted'"),
    ({k: v for k, v in DOCUMENT.items() if k != "issued_at"}, "needs 'issued_at'"),
    ({**DOCUMENT, "tenant_id": "../t"}, "invalid tenant id"),
    ({**DOCUMENT, "key_id": "x"}, "must not set key_id"),
    ({**DOCUMENT, "signature": "x"}, "must not set signature"),
    ({**DOCUMENT, "ratio": 0.5}, "floating-point"),
    ({**DOCUMENT, "bytes": 2**60}, "outside"),
    ({**DOCUMENT, "clé": 1}, "not an ASCII string"),
    ({**DOCUMENT, "note": "\ud800"}, "not valid Unicode"),
    ({**DOCUMENT, "raw": b"x"}, "bytes is not a JSON value"),
])
def test_sign_refuses_what_cannot_be_verified_everywhere(document: dict[str, Any],
                                                         reason: str) -> None:
    with pytest.raises(BadInput, match=reason):
        sign_certificate(KEY, document)


def test_canonical_json_is_jcs_for_our_documents() -> None:
    assert canonical_json({"b": [1, "é", None], "a": {"d": True, "c": "\n"}}) == (
        '{"a":{"c":"\\n","d":true},"b":[1,"é",null]}'.encode())


# -- keys ------------------------------------------------------------------------------------

def test_configured_key(tmp_path: Path) -> None:
    configured = base64.b64encode(bytes(range(32))).decode()
    key = load_signing_key(configured, tmp_path)
    assert key_id(key.public_key()) == key_id(KEY.public_key())
    assert not (tmp_path / KEY_FILE_NAME).exists()
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(BadInput, match="TENANT_EXPORT_SIGNING_KEY is not base64") as err:
            load_signing_key(bad, tmp_path)
        assert bad not in str(err.value)


def test_generated_key_is_private_and_stable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = Settings(state_dir=state)
    assert local_public_key(settings) is None  # nothing generated by a mere look
    first = signing_key_from_settings(settings)
    path = state / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id(signing_key_from_settings(settings).public_key()) == key_id(first.public_key())
    local = local_public_key(settings)
    assert local is not None and key_id(local) == key_id(first.public_key())
    assert [p.name for p in state.iterdir()] == [KEY_FILE_NAME]  # no temporary file left
    path.chmod(0o644)
    with pytest.raises(BadInput, match=r"readable by others.*chmod 600"):
        signing_key_from_settings(settings)


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(4), context.Queue()
    workers = [context.Process(target=signing_key_id, args=(str(tmp_path), start, out))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    ids = {out.get(timeout=120) for _ in workers}
    for worker in workers:
        worker.join(timeout=60)
    assert len(ids) == 1
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]


def test_public_key_forms() -> None:
    public = KEY.public_key()
    for published in (public_key_pem(public).encode(), public_key_base64(public).encode()):
        assert key_id(load_public_key(published)) == key_id(public)
    for bad in (b"-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n", b"abc", b""):
        with pytest.raises(BadInput, match="public key"):
            load_public_key(bad)


# -- CLI -------------------------------------------------------------------------------------

@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TENANT_EXPORT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TENANT_EXPORT_CONTROL_URL", f"sqlite:///{tmp_path}/control.sqlite")
    monkeypatch.delenv("TENANT_EXPORT_SIGNING_KEY", raising=False)
    return tmp_path


def test_cli_public_key_and_verify(installation: Path) -> None:
    printed = runner.invoke(app, ["certificate", "public-key"])
    assert printed.exit_code == 0, printed.stderr
    assert printed.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    pem = installation / "tenant-export.pem"
    pem.write_text(printed.stdout)
    info = json.loads(runner.invoke(app, ["certificate", "public-key", "--json"]).stdout)
    key = signing_key_from_settings(Settings())
    assert info["key_id"] == key_id(key.public_key()) == key_id(load_public_key(pem.read_bytes()))

    cert_file = installation / "t-42.json"
    cert_file.write_bytes(dump_certificate(sign_certificate(key, DOCUMENT)))
    for extra in (["--public-key", str(pem)], []):  # published key, or the installation's
        ok = runner.invoke(app, ["certificate", "verify", str(cert_file), *extra])
        assert ok.exit_code == 0, ok.stderr
        assert ok.stdout.startswith("valid: deletion certificate of tenant t-42")
        assert info["key_id"] in ok.stdout
    as_json = json.loads(runner.invoke(app, ["certificate", "verify", str(cert_file),
                                             "--json"]).stdout)
    assert as_json == {"valid": True, "key_id": info["key_id"], "tenant_id": "t-42",
                       "issued_at": DOCUMENT["issued_at"]}

    text = cert_file.read_text()
    cert_file.write_text(text.replace('"bytes": 48211043', '"bytes": 48211042'))
    changed = runner.invoke(app, ["certificate", "verify", str(cert_file)])
    assert changed.exit_code == 1
    assert "the signature does not match the content" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1

    other = installation / "other.pem"
    other.write_text(public_key_pem(OTHER.public_key()))
    cert_file.write_text(text)
    wrong = runner.invoke(app, ["certificate", "verify", str(cert_file), "--public-key",
                                str(other)])
    assert wrong.exit_code == 1 and "public key given is" in wrong.stderr
    missing = runner.invoke(app, ["certificate", "verify", str(installation / "nope.json")])
    assert missing.exit_code == 2 and "cannot read the certificate" in missing.stderr


def test_cli_verify_without_any_key(installation: Path) -> None:
    cert_file = installation / "t-42.json"
    cert_file.write_bytes(dump_certificate(sign_certificate(KEY, DOCUMENT)))
    result = runner.invoke(app, ["certificate", "verify", str(cert_file)])
    assert result.exit_code == 2 and "pass --public-key" in result.stderr
    assert not (installation / "state" / KEY_FILE_NAME).exists()


# -- the documentation -----------------------------------------------------------------------

def _doc_blocks() -> tuple[str, str, str]:
    doc = (ROOT / "docs" / "offboarding.md").read_text()
    cert = re.search(r"```json\n(\{\n  \"audit_head\".*?)\n```", doc, re.S)
    pem = re.search(r"```text\n(-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----)\n```",
                    doc, re.S)
    snippet = re.search(r"```python\n(.*?load_pem_public_key.*?)```", doc, re.S)
    assert cert and pem and snippet
    return cert.group(1) + "\n", pem.group(1) + "\n", snippet.group(1)


def test_the_documented_example_verifies_and_matches_the_example_key() -> None:
    cert_text, pem, _snippet = _doc_blocks()
    cert = _check(cert_text.encode(), load_public_key(pem.encode()))
    assert cert_text.encode() == dump_certificate(cert)  # the file form, as documented
    assert key_id(load_public_key(pem.encode())) == key_id(KEY.public_key())
    # re-signing the documented content with the documented example key gives it back
    unsigned = {k: v for k, v in cert.items() if k not in ("format", "version", "key_id",
                                                              "signature")}
    assert sign_certificate(KEY, unsigned) == cert


def test_the_documented_offline_snippet(tmp_path: Path) -> None:
    cert_text, pem, snippet = _doc_blocks()
    (tmp_path / "verify.py").write_text(snippet)
    (tmp_path / "certificate.json").write_text(cert_text)
    (tmp_path / "public-key.pem").write_text(pem)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "verify.py", "certificate.json", "public-key.pem"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              check=False, env={**os.environ, "PYTHONPATH": ""})

    ok = run()
    assert ok.returncode == 0 and ok.stdout.startswith("valid, signed by ed25519:"), ok.stderr
    (tmp_path / "certificate.json").write_text(cert_text.replace('"seq": 1843', '"seq": 1844'))
    changed = run()
    assert changed.returncode != 0 and "INVALID" in changed.stderr

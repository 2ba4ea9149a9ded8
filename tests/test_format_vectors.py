"""The test vectors of docs/backup-format.md, read from the document itself (section 6 and the
record examples of section 3), checked against the code and against a reference reader and
writer written from the document alone (no storage.aead), so neither can drift from the text.

``encrypt_v1`` and ``reference_decrypt`` are shared with the other tests: a format-1 writer
is how they make the backups an older version left behind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import storage.aead
from kernel.errors import VerificationFailed
from storage.aead import (
    HEADER_BYTES_V1,
    EncryptingWriter,
    ciphertext_size,
    decrypt_stream,
    object_associated_data,
    plaintext_size,
)
from storage.datakeys import DataKeys, check_value
from storage.doc_index import IndexWriter
from storage.doc_index import parse as parse_index
from storage.keyring_records import open_record, parse, pick_wrapper
from storage.keys import parse_master_key

DOC = Path(__file__).resolve().parent.parent / "docs" / "backup-format.md"
HEX_FIELDS = {"data_key_1", "data_key_2", "check_value_1", "check_value_2", "record_mac_key",
              "plaintext", "object", "object_key", "plaintext_sha256", "name_key", "blob_name"}


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def vectors(kind: str) -> dict[str, Any]:
    """The ```vectors-<kind> block: ``name value`` lines, indented lines continue the value;
    hex values lose their spaces."""
    block = re.search(rf"```vectors-{kind}\n(.*?)```", doc_text(), re.S)
    assert block, f"no vectors-{kind} block in {DOC}"
    found: dict[str, str] = {}
    last = ""
    for line in block.group(1).splitlines():
        if line.startswith(" "):
            found[last] += " " + line.strip()
        elif line.strip():
            last, _, value = line.partition(" ")
            found[last] = value.strip()
    return {k: bytes.fromhex(v.replace(" ", "")) if k in HEX_FIELDS else v
            for k, v in found.items()}


def json_after(heading: str) -> bytes:
    """The first ```json block after ``heading``, as the bytes a record file would hold."""
    text = doc_text()
    start = text.index(heading)
    block = re.search(r"```json\n(.*?)```", text[start:], re.S)
    assert block
    return block.group(1).encode("utf-8")


# -- a reference implementation, from the document only --------------------------------------


def reference_decrypt(blob: bytes, keys: dict[int, bytes], ad: bytes) -> bytes:
    """Section 4, both versions."""
    assert blob[:4] == b"TXE1" and blob[4] in (1, 2)
    version = blob[4]
    segment_size = int.from_bytes(blob[5:9], "big")
    if version == 2:
        key_id, salt, prefix, header = int.from_bytes(blob[9:13], "big"), blob[13:45], \
            blob[45:52], blob[:52]
    else:
        key_id, salt, prefix, header = 1, blob[9:41], blob[41:48], blob[:48]
    info = f"tenant-export/v{version}/".encode() + ad
    key = HKDF(hashes.SHA256(), 32, salt, info).derive(keys[key_id])
    body = blob[len(header):]
    step = segment_size + 16
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    out = []
    for index, piece in enumerate(pieces):
        last = 1 if index == len(pieces) - 1 else 0
        nonce = prefix + index.to_bytes(4, "big") + bytes([last])
        out.append(AESGCM(key).decrypt(nonce, piece, header))
    return b"".join(out)


def encrypt_v1(plaintext: bytes, dek: bytes, ad: bytes, segment_size: int,
               salt: bytes | None = None, prefix: bytes | None = None) -> bytes:
    """A format-1 writer (section 4, version 1): what backups made before version 2 hold."""
    salt, prefix = salt or os.urandom(32), prefix or os.urandom(7)
    header = b"TXE1\x01" + segment_size.to_bytes(4, "big") + salt + prefix
    key = AESGCM(HKDF(hashes.SHA256(), 32, salt, b"tenant-export/v1/" + ad).derive(dek))
    pieces = [plaintext[i : i + segment_size]
              for i in range(0, len(plaintext), segment_size)] or [b""]
    sealed = [key.encrypt(prefix + i.to_bytes(4, "big") + bytes([i == len(pieces) - 1]), p,
                          header) for i, p in enumerate(pieces)]
    return header + b"".join(sealed)


def hkdf_no_salt(key: bytes, label: bytes, tenant: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, label + b"\0" + tenant.encode()).derive(key)


# -- version 2 ---------------------------------------------------------------------------------


V2 = vectors("v2")
V1 = vectors("v1")
TENANT = V2["tenant"]
KEYS = {1: V2["data_key_1"], 2: V2["data_key_2"]}
AD = object_associated_data(TENANT, V2["object_name"])


def test_the_documented_record_opens_to_the_documented_keys() -> None:
    wrapper = parse_master_key(V2["master_key"])
    assert wrapper.key_id == V2["master_key_id"]
    record = parse(json_after("### 3.1 Example"), TENANT)
    assert record.version == 2 and record.active == 2
    keys = open_record(record, pick_wrapper(record, [wrapper]))
    assert dict(keys.keys) == KEYS
    assert keys.record_mac_key(TENANT) == V2["record_mac_key"]
    assert {i: bytes.fromhex(c) for i, c in keys.checks().items()} == {
        1: V2["check_value_1"], 2: V2["check_value_2"]}


def test_the_record_mac_follows_the_document() -> None:
    """Section 3.2 from the text alone: canonical JSON without "mac", HMAC under HKDF of key 1."""
    stored = json.loads(json_after("### 3.1 Example"))
    body = {k: v for k, v in stored.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    mac_key = hkdf_no_salt(KEYS[1], b"tenant-export/v2/key-record", TENANT)
    assert mac_key == V2["record_mac_key"]
    expected = hmac.new(mac_key, canonical.encode(), hashlib.sha256).digest()
    assert base64.b64decode(stored["mac"]) == expected
    for entry in stored["data_keys"]:  # section 3.3: AD = purpose NUL tenant NUL id
        aad = b"tenant-export/v2/data-key\0" + TENANT.encode() + b"\0" + str(entry["id"]).encode()
        kek = base64.b64decode(V2["master_key"])
        assert AESGCM(kek).decrypt(base64.b64decode(entry["nonce"]),
                                   base64.b64decode(entry["wrapped"]), aad) == KEYS[entry["id"]]
    assert hmac.new(KEYS[2], b"tenant-export/v2/key-check", hashlib.sha256).digest()[:16] == (
        V2["check_value_2"])


def test_the_documented_object_decrypts() -> None:
    obj, plaintext = V2["object"], V2["plaintext"]
    assert len(obj) == 140 == ciphertext_size(len(plaintext), int(V2["segment_size"]))
    assert obj[9:13] == (2).to_bytes(4, "big")  # sealed under data key 2
    key = HKDF(hashes.SHA256(), 32, obj[13:45], b"tenant-export/v2/" + AD).derive(KEYS[2])
    assert key == V2["object_key"]
    assert reference_decrypt(obj, KEYS, AD) == plaintext
    assert b"".join(decrypt_stream([obj], DataKeys(KEYS, 2), AD)) == plaintext


def test_the_writer_produces_the_documented_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = V2["object"]
    randoms = iter([obj[13:45], obj[45:52]])  # the salt, then the nonce prefix
    monkeypatch.setattr(storage.aead.os, "urandom", lambda n: next(randoms))
    sink = io.BytesIO()
    with EncryptingWriter(sink, DataKeys(KEYS, 2), AD,
                          segment_size=int(V2["segment_size"])) as writer:
        writer.write(V2["plaintext"])
    assert sink.getvalue() == obj


def test_the_blob_name_follows_the_document() -> None:
    sha = hashlib.sha256(V2["plaintext"]).digest()
    assert sha == V2["plaintext_sha256"]
    name_key = hkdf_no_salt(KEYS[1], b"tenant-export/v2/blob-name", TENANT)
    assert name_key == V2["name_key"]
    assert hmac.new(name_key, sha, hashlib.sha256).digest() == V2["blob_name"]
    keys = DataKeys(KEYS, 2)
    assert keys.name_key(TENANT) == V2["name_key"]
    assert keys.blob_name(TENANT, sha.hex()) == V2["blob_name"].hex()
    assert DataKeys({1: KEYS[1]}, 1).blob_name(TENANT, sha.hex()) == V2["blob_name"].hex()


def test_the_documented_sizes() -> None:
    """Section 6.1 (and the 4 bytes less of version 1)."""
    mib = 1024 * 1024
    assert ciphertext_size(2 * mib + mib // 2) == 52 + 2_621_440 + 3 * 16 == 2_621_540
    assert plaintext_size(2_621_540, mib) == 2_621_440
    assert ciphertext_size(0) == 68 and ciphertext_size(2 * mib) == 52 + 2 * mib + 32
    assert ciphertext_size(2 * mib + mib // 2, mib, HEADER_BYTES_V1) == 2_621_536
    assert plaintext_size(2_621_536, mib, HEADER_BYTES_V1) == 2_621_440
    assert ciphertext_size(0, mib, HEADER_BYTES_V1) == 64


# -- the document index (version 3) -----------------------------------------------------------


INDEX = vectors("index-v3")
INDEX_AD = object_associated_data(TENANT, INDEX["object_name"])


def test_the_documented_index_decrypts_and_parses() -> None:
    """Section 6.4: a sealed object like any other, then JSON lines the manifest counts."""
    obj, plaintext = INDEX["object"], INDEX["plaintext"]
    assert INDEX["tenant"] == TENANT and INDEX["object_name"] == (
        f"snapshots/{INDEX['snapshot_id']}/documents.jsonl")
    assert len(obj) == 562 == ciphertext_size(len(plaintext), int(INDEX["segment_size"]))
    assert reference_decrypt(obj, KEYS, INDEX_AD) == plaintext
    assert hashlib.sha256(plaintext).digest() == INDEX["plaintext_sha256"]
    recorded = {"count": int(INDEX["count"]), "plaintext_bytes": len(plaintext),
                "plaintext_sha256": INDEX["plaintext_sha256"].hex()}
    entries = list(parse_index(decrypt_stream([obj], DataKeys(KEYS, 2), INDEX_AD), "index",
                               recorded))
    assert [e["status"] for e in entries] == ["ok", "missing"]
    assert sum(e["status"] == "missing" for e in entries) == int(INDEX["missing"])
    ok = entries[0]
    assert ok["sha256"] == V2["plaintext_sha256"].hex()  # section 6.2's plaintext
    assert ok["blob"] == V2["blob_name"].hex() and ok["size"] == len(V2["plaintext"])
    assert ok["etag"] == hashlib.md5(V2["plaintext"]).hexdigest()
    rewritten = io.BytesIO()
    IndexWriter(rewritten).write_all(entries)  # the canonical lines, byte for byte
    assert rewritten.getvalue() == plaintext
    for line in plaintext.splitlines():  # section 9.2.1: sorted keys, no spaces
        assert line == json.dumps(json.loads(line), sort_keys=True,
                                  separators=(",", ":")).encode()


def test_the_writer_produces_the_documented_index(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = INDEX["object"]
    randoms = iter([obj[13:45], obj[45:52]])
    monkeypatch.setattr(storage.aead.os, "urandom", lambda n: next(randoms))
    sink = io.BytesIO()
    with EncryptingWriter(sink, DataKeys(KEYS, 2), INDEX_AD,
                          segment_size=int(INDEX["segment_size"])) as writer:
        writer.write(INDEX["plaintext"])
    assert sink.getvalue() == obj


def test_a_rolled_back_index_fails_the_manifests_count_and_hash() -> None:
    plaintext = INDEX["plaintext"]
    first_line = plaintext.split(b"\n")[0] + b"\n"
    recorded = {"count": 2, "plaintext_bytes": len(plaintext),
                "plaintext_sha256": INDEX["plaintext_sha256"].hex()}
    with pytest.raises(VerificationFailed, match="the manifest says 2 lines"):
        list(parse_index([first_line], "index", recorded))


def test_check_values_follow_the_document() -> None:
    assert check_value(KEYS[1]) == V2["check_value_1"].hex()
    assert check_value(KEYS[2]) == V2["check_value_2"].hex()


# -- version 1 ---------------------------------------------------------------------------------


def test_the_version_1_object_still_decrypts_and_the_reference_writer_makes_it() -> None:
    obj, dek = V1["object"], V1["data_key_1"]
    ad = object_associated_data(V1["tenant"], V1["object_name"])
    assert len(obj) == 136 and obj[4] == 1
    assert HKDF(hashes.SHA256(), 32, obj[9:41], b"tenant-export/v1/" + ad).derive(dek) == (
        V1["object_key"])
    assert reference_decrypt(obj, {1: dek}, ad) == V1["plaintext"]
    assert b"".join(decrypt_stream([obj], dek, ad)) == V1["plaintext"]
    assert b"".join(decrypt_stream([obj], DataKeys(KEYS, 2), ad)) == V1["plaintext"]
    assert encrypt_v1(V1["plaintext"], dek, ad, int(V1["segment_size"]), obj[9:41],
                      obj[41:48]) == obj


def test_the_version_1_record_still_opens() -> None:
    wrapper = parse_master_key(V1["master_key"])
    record = parse(json_after("### 3.4 Version-1 records"), V1["tenant"])
    assert record.version == 1 and [e.id for e in record.entries] == [1]
    keys = open_record(record, pick_wrapper(record, [wrapper]))
    assert dict(keys.keys) == {1: V1["data_key_1"]}

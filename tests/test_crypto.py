"""Envelope keys and the TXE1 streaming AEAD (storage.keys, storage.aead)."""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import json
import os
import struct
import tracemalloc
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kernel.errors import BadInput, TerminalError, VerificationFailed
from storage.aead import (
    HEADER_BYTES,
    MAX_SEGMENT_SIZE,
    SEGMENT_SIZE,
    TAG_BYTES,
    EncryptingWriter,
    SeekableDecryptor,
    ciphertext_size,
    decrypt_stream,
    object_associated_data,
    plaintext_size,
)
from storage.keys import (
    KeyWrapper,
    KmsKeyWrapper,
    LocalKeyWrapper,
    generate_master_key,
    new_data_key,
    parse_master_key,
)

SEG = 64
DEK = bytes(range(32))
AD = object_associated_data("t-42", "tables/members.parquet")


def encrypt(
    plaintext: bytes, *, dek: bytes = DEK, ad: bytes = AD, seg: int = SEG, piece: int = 7
) -> bytes:
    sink = io.BytesIO()
    with EncryptingWriter(sink, dek, ad, segment_size=seg) as writer:
        for start in range(0, len(plaintext), piece):
            writer.write(plaintext[start : start + piece])
    return sink.getvalue()


def decrypt(ciphertext: bytes, *, dek: bytes = DEK, ad: bytes = AD, chunk: int = 1000) -> bytes:
    chunks = (ciphertext[i : i + chunk] for i in range(0, len(ciphertext), chunk))
    return b"".join(decrypt_stream(chunks, dek, ad))


def segments(ciphertext: bytes, seg: int = SEG) -> list[bytes]:
    body = ciphertext[HEADER_BYTES:]
    return [body[i : i + seg + TAG_BYTES] for i in range(0, len(body), seg + TAG_BYTES)]


def seekable(ciphertext: bytes, *, dek: bytes = DEK, ad: bytes = AD) -> SeekableDecryptor:
    return SeekableDecryptor(lambda s, e: ciphertext[s:e], len(ciphertext), dek, ad)


# --- round trips -------------------------------------------------------------------------------

SIZES = [0, 1, SEG - 1, SEG, SEG + 1, 10 * SEG, 10 * SEG + 13]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [1, 7, SEG, SEG + 1, 1000])
def test_round_trip(size: int, piece: int) -> None:
    plaintext = os.urandom(size)
    sink = io.BytesIO()
    with EncryptingWriter(sink, DEK, AD, segment_size=SEG) as writer:
        for start in range(0, size, piece):
            assert writer.write(plaintext[start : start + piece]) == len(
                plaintext[start : start + piece]
            )
    ciphertext = sink.getvalue()
    assert len(ciphertext) == ciphertext_size(size, SEG) == writer.ciphertext_bytes
    assert writer.plaintext_bytes == size
    assert writer.plaintext_sha256 == hashlib.sha256(plaintext).hexdigest()
    assert writer.finished
    assert plaintext_size(len(ciphertext), SEG) == size
    for chunk in (1, 13, SEG + TAG_BYTES, 100_000):
        assert decrypt(ciphertext, chunk=chunk) == plaintext
    reader = seekable(ciphertext)
    assert reader.size() == size
    assert reader.read() == plaintext


def test_empty_plaintext_is_one_empty_final_segment() -> None:
    ciphertext = encrypt(b"")
    assert len(ciphertext) == HEADER_BYTES + TAG_BYTES
    assert list(decrypt_stream([ciphertext], DEK, AD)) == [b""]


def test_exact_multiple_has_no_trailing_empty_segment() -> None:
    ciphertext = encrypt(os.urandom(3 * SEG))
    assert [len(s) for s in segments(ciphertext)] == [SEG + TAG_BYTES] * 3


def test_decrypt_yields_segment_by_segment() -> None:
    plaintext = os.urandom(3 * SEG + 5)
    pieces = list(decrypt_stream([encrypt(plaintext)], DEK, AD))
    assert [len(p) for p in pieces] == [SEG, SEG, SEG, 5]


def test_every_object_gets_fresh_salt_and_nonce_prefix() -> None:
    first, second = encrypt(b"same"), encrypt(b"same")
    assert first[9:48] != second[9:48]
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]


def test_default_segment_size_is_one_mib() -> None:
    ciphertext = encrypt(b"x", seg=SEGMENT_SIZE)
    assert ciphertext[:9] == b"TXE1\x01" + struct.pack(">I", 1024 * 1024)


# --- tampering: every case must raise VerificationFailed ---------------------------------------

PLAIN = bytes(range(256)) + b"tail bytes"  # 4 full segments + 10 bytes: 5 segments
CIPHER = encrypt(PLAIN)


def test_flipping_any_single_byte_fails() -> None:
    small = encrypt(b"The quick brown fox jumps over the dog.\n", seg=16)
    for position in range(len(small)):
        tampered = bytearray(small)
        tampered[position] ^= 0x01
        with pytest.raises(VerificationFailed):
            decrypt(bytes(tampered))
        with pytest.raises(VerificationFailed):
            seekable(bytes(tampered)).read()


@pytest.mark.parametrize(
    ("position", "message"),
    [
        (0, "bad magic/version"),
        (4, "bad magic/version"),
        (20, "segment 0 fails authentication"),  # salt
        (44, "segment 0 fails authentication"),  # nonce prefix
        (HEADER_BYTES + 2 * (SEG + TAG_BYTES) + 30, "segment 2 fails authentication"),
        (len(CIPHER) - 1, "segment 4 fails authentication"),  # tag of the final segment
    ],
)
def test_flip_names_the_fault(position: int, message: str) -> None:
    tampered = bytearray(CIPHER)
    tampered[position] ^= 0x80
    with pytest.raises(VerificationFailed, match=message):
        decrypt(bytes(tampered))


@pytest.mark.parametrize("size", [0, 1, 40, SEG])
def test_header_of_a_one_segment_object_is_authenticated(size: int) -> None:
    """Without the header as segment AD, a one-segment object would accept any larger size."""
    single = encrypt(os.urandom(size))
    for value in (SEG + 1, 2 * SEG, 1 << 20, MAX_SEGMENT_SIZE):
        tampered = single[:5] + struct.pack(">I", value) + single[9:]
        with pytest.raises(VerificationFailed, match="segment 0 fails authentication"):
            decrypt(tampered)
        with pytest.raises(VerificationFailed, match="segment 0 fails authentication"):
            seekable(tampered)
    for position in range(HEADER_BYTES):
        tampered_byte = bytearray(single)
        tampered_byte[position] ^= 0x04
        with pytest.raises(VerificationFailed):
            decrypt(bytes(tampered_byte))


def test_segment_size_field_tampered_fails() -> None:
    for value in (SEG + 1, SEG - 1, 16, 1 << 20, MAX_SEGMENT_SIZE, MAX_SEGMENT_SIZE + 1, 0):
        tampered = CIPHER[:5] + struct.pack(">I", value) + CIPHER[9:]
        with pytest.raises(VerificationFailed):
            decrypt(tampered)


def test_truncate_at_segment_boundary_is_caught_by_flag() -> None:
    dropped_last = CIPHER[: HEADER_BYTES + 4 * (SEG + TAG_BYTES)]
    with pytest.raises(VerificationFailed, match="truncated: no final segment"):
        decrypt(dropped_last)
    with pytest.raises(VerificationFailed, match="truncated: no final segment"):
        seekable(dropped_last)


@pytest.mark.parametrize("cut", [1, 9, TAG_BYTES, TAG_BYTES + 3, 40])
def test_truncate_mid_segment_fails(cut: int) -> None:
    with pytest.raises(VerificationFailed):
        decrypt(CIPHER[:-cut])
    with pytest.raises(VerificationFailed):
        seekable(CIPHER[:-cut])


@pytest.mark.parametrize("length", [0, 3, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 15])
def test_truncate_into_header_or_first_tag_fails(length: int) -> None:
    with pytest.raises(VerificationFailed, match=r"truncated|bad magic"):
        decrypt(CIPHER[:length])
    with pytest.raises(VerificationFailed, match=r"truncated|bad magic"):
        seekable(CIPHER[:length])


def test_swapping_two_segments_fails() -> None:
    parts = segments(CIPHER)
    parts[1], parts[2] = parts[2], parts[1]
    with pytest.raises(VerificationFailed, match="segment 1 fails authentication"):
        decrypt(CIPHER[:HEADER_BYTES] + b"".join(parts))


def test_duplicating_a_segment_fails() -> None:
    parts = segments(CIPHER)
    parts.insert(2, parts[1])
    with pytest.raises(VerificationFailed, match="segment 2 fails authentication"):
        decrypt(CIPHER[:HEADER_BYTES] + b"".join(parts))


def test_dropping_a_middle_segment_fails() -> None:
    parts = segments(CIPHER)
    del parts[2]
    with pytest.raises(VerificationFailed, match="segment 2 fails authentication"):
        decrypt(CIPHER[:HEADER_BYTES] + b"".join(parts))


@pytest.mark.parametrize("garbage", [b"\x00", b"x" * 15, b"x" * 100, os.urandom(SEG + TAG_BYTES)])
def test_appended_garbage_fails(garbage: bytes) -> None:
    with pytest.raises(VerificationFailed):
        decrypt(CIPHER + garbage)
    with pytest.raises(VerificationFailed):
        seekable(CIPHER + garbage)


def test_data_after_full_final_segment_is_named() -> None:
    full = encrypt(os.urandom(2 * SEG))
    with pytest.raises(VerificationFailed, match="data after the final segment 1"):
        decrypt(full + b"more")
    with pytest.raises(VerificationFailed, match="segment 2 fails authentication"):
        seekable(full + os.urandom(SEG + TAG_BYTES))  # the appended "final" segment is checked


@pytest.mark.parametrize(
    "ad",
    [
        object_associated_data("t-43", "tables/members.parquet"),  # another tenant
        object_associated_data("t-42", "tables/invoices.parquet"),  # another object
        b"",
    ],
)
def test_wrong_associated_data_fails(ad: bytes) -> None:
    with pytest.raises(VerificationFailed, match="segment 0 fails authentication"):
        decrypt(CIPHER, ad=ad)
    with pytest.raises(VerificationFailed):
        seekable(CIPHER, ad=ad)


def test_wrong_data_key_fails() -> None:
    with pytest.raises(VerificationFailed, match="segment 0 fails authentication"):
        decrypt(CIPHER, dek=new_data_key())
    with pytest.raises(VerificationFailed):
        seekable(CIPHER, dek=new_data_key())


def test_header_from_another_object_fails() -> None:
    other = encrypt(PLAIN)
    with pytest.raises(VerificationFailed):
        decrypt(other[:HEADER_BYTES] + CIPHER[HEADER_BYTES:])


def test_segment_from_another_object_fails() -> None:
    other = encrypt(PLAIN)
    parts = segments(CIPHER)
    parts[1] = segments(other)[1]
    with pytest.raises(VerificationFailed, match="segment 1"):
        decrypt(CIPHER[:HEADER_BYTES] + b"".join(parts))


def test_oversized_segment_size_in_header_is_refused() -> None:
    header = b"TXE1\x01" + struct.pack(">I", MAX_SEGMENT_SIZE + 1) + bytes(39)
    with pytest.raises(VerificationFailed, match="segment size"):
        decrypt(header + bytes(100))


# --- writer behaviour -------------------------------------------------------------------------


def test_exception_in_with_block_leaves_no_final_segment() -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, DEK, AD, segment_size=SEG)

    def fail_midway() -> None:
        with writer:
            writer.write(os.urandom(3 * SEG))
            raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        fail_midway()
    assert writer.closed and not writer.finished
    with pytest.raises(VerificationFailed, match="truncated: no final segment"):
        decrypt(sink.getvalue())


def test_dropped_unclosed_writer_does_not_seal() -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, DEK, AD, segment_size=SEG)
    writer.write(os.urandom(2 * SEG + 5))
    del writer
    gc.collect()
    with pytest.raises(VerificationFailed, match="truncated: no final segment"):
        decrypt(sink.getvalue())


def test_close_is_idempotent_and_sink_stays_open() -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, DEK, AD, segment_size=SEG)
    writer.write(b"abc")
    writer.close()
    writer.close()
    assert not sink.closed
    assert decrypt(sink.getvalue()) == b"abc"
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_writer_refuses_bad_parameters() -> None:
    with pytest.raises(TerminalError, match="segment size"):
        EncryptingWriter(io.BytesIO(), DEK, AD, segment_size=8)
    with pytest.raises(TerminalError, match="32 bytes"):
        EncryptingWriter(io.BytesIO(), DEK[:16], AD)


def test_partial_writes_of_a_raw_sink_are_completed() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]  # returns fewer bytes
            self.data += bytes(b)[:5]
            return min(5, len(b))

    sink = Trickle()
    with EncryptingWriter(sink, DEK, AD, segment_size=SEG) as writer:
        writer.write(PLAIN)
    assert decrypt(bytes(sink.data)) == PLAIN


def test_object_associated_data() -> None:
    assert object_associated_data("t-42", "a/b") == b"t-42\x00a/b"
    with pytest.raises(TerminalError):
        object_associated_data("t-42", "a\x00b")


# --- random access ----------------------------------------------------------------------------


class CountingRanges:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        self.calls.append((start, end))
        return self.data[start:end]

    @property
    def fetched(self) -> int:
        return sum(end - start for start, end in self.calls)


def test_seek_and_read_match_plaintext() -> None:
    plaintext = os.urandom(10 * SEG + 13)
    reader = seekable(encrypt(plaintext))
    assert reader.readable() and reader.seekable() and not reader.writable()
    for start, length in [(0, 1), (63, 2), (64, 64), (100, 300), (650, 100), (0, 10_000)]:
        assert reader.seek(start) == start
        assert reader.read(length) == plaintext[start : start + length]
        assert reader.tell() == min(start + length, len(plaintext))
    assert reader.seek(-5, io.SEEK_END) == len(plaintext) - 5
    assert reader.read() == plaintext[-5:]
    assert reader.read(10) == b""
    reader.seek(2, io.SEEK_SET)
    reader.seek(3, io.SEEK_CUR)
    assert reader.read(4) == plaintext[5:9]
    reader.seek(10**6)
    assert reader.read(1) == b""
    with pytest.raises(ValueError, match="negative"):
        reader.seek(-1)


def test_random_access_fetches_only_touched_segments_and_caches_the_last() -> None:
    ranges = CountingRanges(encrypt(os.urandom(10 * SEG)))
    reader = SeekableDecryptor(ranges, len(ranges.data), DEK, AD)
    assert len(ranges.calls) == 2  # header, final segment (authenticates the size)
    reader.seek(3 * SEG + 1)
    reader.read(10)
    reader.read(10)
    reader.seek(3 * SEG)
    reader.read(5)
    assert len(ranges.calls) == 3
    assert ranges.calls[-1] == (HEADER_BYTES + 3 * (SEG + TAG_BYTES), HEADER_BYTES + 4 * 80)


def test_random_access_detects_a_tampered_segment_when_read() -> None:
    tampered = bytearray(encrypt(os.urandom(10 * SEG)))
    tampered[HEADER_BYTES + 5 * (SEG + TAG_BYTES) + 3] ^= 1
    reader = seekable(bytes(tampered))
    reader.seek(2 * SEG)
    reader.read(SEG)  # untouched segments are not checked
    reader.seek(5 * SEG)
    with pytest.raises(VerificationFailed, match="segment 5 fails authentication"):
        reader.read(1)


def test_random_access_flag_rule_holds() -> None:
    """A final segment may sit only at the end; the segment at the end must be final."""
    plaintext = os.urandom(4 * SEG)
    full = encrypt(plaintext)
    with pytest.raises(VerificationFailed, match="truncated: no final segment"):
        seekable(full[: HEADER_BYTES + 2 * (SEG + TAG_BYTES)])
    parts = segments(full)
    extended = full[:HEADER_BYTES] + b"".join([*parts, parts[0]])  # final one no longer last
    with pytest.raises(VerificationFailed, match="segment 4 fails authentication"):
        seekable(extended)
    reordered = full[:HEADER_BYTES] + b"".join([parts[0], parts[3], parts[2], parts[1]])
    with pytest.raises(VerificationFailed, match="segment 3 fails authentication"):
        seekable(reordered)


def test_short_range_reply_fails() -> None:
    ciphertext = encrypt(PLAIN)
    with pytest.raises(VerificationFailed, match="truncated: range"):
        SeekableDecryptor(lambda s, e: ciphertext[s : e - 1], len(ciphertext), DEK, AD)


def test_claimed_size_impossible_for_format_fails() -> None:
    ciphertext = encrypt(PLAIN)
    for claimed in (len(ciphertext) - 1, len(ciphertext) + 1):
        with pytest.raises(VerificationFailed):
            SeekableDecryptor(lambda s, e: ciphertext[s:e], claimed, DEK, AD)


def test_parquet_reads_one_column_through_the_decryptor() -> None:
    rows = 20_000
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": pa.array([f"member-{i}-{os.urandom(8).hex()}" for i in range(rows)]),
            "blob": pa.array([os.urandom(32) for _ in range(rows)], pa.binary()),
        }
    )
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, DEK, AD, segment_size=4096)
    pq.write_table(table, writer, row_group_size=5_000, compression="zstd")
    writer.close()
    assert writer.finished
    ranges = CountingRanges(sink.getvalue())

    parquet = pq.ParquetFile(SeekableDecryptor(ranges, len(ranges.data), DEK, AD))
    assert parquet.metadata.num_row_groups == 4
    assert parquet.read(columns=["id"]).column("id").to_pylist() == list(range(rows))
    assert ranges.fetched < len(ranges.data) / 3  # the other columns were never fetched
    second = parquet.read_row_group(1, columns=["name"])
    assert second.column("name").to_pylist() == table.column("name").to_pylist()[5_000:10_000]
    whole = pq.read_table(seekable(sink.getvalue()))
    assert whole.equals(table)


# --- memory ------------------------------------------------------------------------------------


class CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]  # bytes-like in, count out
        self.bytes += len(b)
        return len(b)


@pytest.mark.parametrize("piece", [SEGMENT_SIZE, SEGMENT_SIZE + 1, 3 * SEGMENT_SIZE + 7])
def test_writer_buffer_never_exceeds_one_segment(piece: int) -> None:
    total = 64 * SEGMENT_SIZE
    block = os.urandom(piece)
    sink = CountingSink()
    expected = hashlib.sha256()
    tracemalloc.start()
    try:
        with EncryptingWriter(sink, DEK, AD) as writer:
            written = 0
            while written < total:
                data = block[: total - written]
                writer.write(data)
                expected.update(data)
                written += len(data)
                assert len(writer._buffer) <= SEGMENT_SIZE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.max_buffered <= SEGMENT_SIZE
    assert writer.plaintext_bytes == total
    assert sink.bytes == writer.ciphertext_bytes == ciphertext_size(total)
    assert writer.plaintext_sha256 == expected.hexdigest()
    assert peak < 4 * SEGMENT_SIZE  # a segment in the buffer, one sealed: not the 64 MiB


def test_decrypt_stream_memory_is_bounded() -> None:
    plaintext_block = os.urandom(SEGMENT_SIZE)
    sink = io.BytesIO()
    with EncryptingWriter(sink, DEK, AD) as writer:
        for _ in range(16):
            writer.write(plaintext_block)
    ciphertext = sink.getvalue()

    def chunks() -> Iterator[bytes]:
        view = memoryview(ciphertext)
        for start in range(0, len(ciphertext), 256 * 1024):
            yield bytes(view[start : start + 256 * 1024])

    tracemalloc.start()
    try:
        count = 0
        for piece in decrypt_stream(chunks(), DEK, AD):
            assert piece == plaintext_block
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 16
    assert peak < 6 * SEGMENT_SIZE


# --- the format as documented (docs/backup-format.md) ------------------------------------------

DOC_PLAINTEXT = b"The quick brown fox jumps over the dog.\n"
DOC_OBJECT = bytes.fromhex(
    "54584531010000001052ea59a3c5276bd053d05c2719dd95248cd660686cf1cc"
    "2a3520051d9c4be8919ca49db26e6bd7b92b9d592953ba59c0d5f6fa7e6636d6"
    "34e9173488bdfd8506442653d6c3df56b31ef8fcdf92f466f9176d362b6dfcf0"
    "902a061708bdae9e0f8802adc0c09faeb899cf8c031e3698ca8c41102e2f1980"
    "e6ee422f72ed7391"
)
DOC_OBJECT_KEY = "f77e70dcb7fb22b77c777badfcb0d9e6db50f1cf8ad4e9d03b9ecbca390725d1"
DOC_MASTER_KEY = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="
DOC_RECORD = b"""{
  "version": 1,
  "tenant_id": "t-42",
  "key_id": "local:cb992c115eff69c3",
  "alg": "A256GCM",
  "nonce": "Y7Opoql0zJx4oUU0",
  "wrapped": "gnhfdw/6gGWa13S67/rlVIxO1MjcE/tuY3xO4BTRwUoZHCpieJSSJ6ZgJgnoZZ+v",
  "created_at": "2026-11-26T11:07:23Z"
}
"""


def reference_decrypt(blob: bytes, dek: bytes, ad: bytes) -> bytes:
    """A decryptor written from the document alone (no storage.aead), to keep both honest."""
    assert blob[:5] == b"TXE1\x01"
    segment_size = int.from_bytes(blob[5:9], "big")
    salt, prefix = blob[9:41], blob[41:48]
    key = HKDF(hashes.SHA256(), 32, salt, b"tenant-export/v1/" + ad).derive(dek)
    body = blob[48:]
    step = segment_size + 16
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    out = []
    for index, piece in enumerate(pieces):
        last = 1 if index == len(pieces) - 1 else 0
        nonce = prefix + index.to_bytes(4, "big") + bytes([last])
        out.append(AESGCM(key).decrypt(nonce, piece, blob[:48]))
    return b"".join(out)


def test_documented_vector_decrypts() -> None:
    assert len(DOC_OBJECT) == 136 == ciphertext_size(40, 16)
    salt = DOC_OBJECT[9:41]
    key = HKDF(hashes.SHA256(), 32, salt, b"tenant-export/v1/" + AD).derive(DEK)
    assert key.hex() == DOC_OBJECT_KEY
    assert reference_decrypt(DOC_OBJECT, DEK, AD) == DOC_PLAINTEXT
    assert decrypt(DOC_OBJECT) == DOC_PLAINTEXT


def test_reference_decryptor_reads_what_the_writer_writes() -> None:
    plaintext = os.urandom(5 * SEG + 9)
    assert reference_decrypt(encrypt(plaintext), DEK, AD) == plaintext


def test_documented_record_unwraps_to_the_documented_data_key() -> None:
    wrapper = parse_master_key(DOC_MASTER_KEY)
    assert wrapper.key_id == "local:cb992c115eff69c3"
    assert wrapper.unwrap(DOC_RECORD, "t-42") == DEK


def test_documented_worked_example_sizes() -> None:
    mib = 1024 * 1024
    assert ciphertext_size(2 * mib + mib // 2) == 48 + 2_621_440 + 3 * 16 == 2_621_536
    assert plaintext_size(2_621_536, mib) == 2_621_440
    assert ciphertext_size(0) == 64
    assert ciphertext_size(2 * mib) == 48 + 2 * mib + 32


# --- key wrapping ------------------------------------------------------------------------------


@pytest.fixture
def wrapper() -> KeyWrapper:
    return parse_master_key(generate_master_key())


def test_wrap_unwrap_round_trip(wrapper: KeyWrapper) -> None:
    assert isinstance(wrapper, LocalKeyWrapper)
    assert isinstance(wrapper, KeyWrapper)
    dek = new_data_key()
    blob = wrapper.wrap(dek, "t-42")
    record = json.loads(blob)
    assert set(record) == {
        "version",
        "tenant_id",
        "key_id",
        "alg",
        "nonce",
        "wrapped",
        "created_at",
    }
    assert record["version"] == 1 and record["alg"] == "A256GCM"
    assert record["tenant_id"] == "t-42" and record["key_id"] == wrapper.key_id
    assert len(base64.b64decode(record["nonce"])) == 12
    assert len(base64.b64decode(record["wrapped"])) == 32 + 16
    assert wrapper.unwrap(blob, "t-42") == dek
    assert json.loads(wrapper.wrap(dek, "t-42"))["nonce"] != record["nonce"]


def test_unwrap_for_another_tenant_fails(wrapper: KeyWrapper) -> None:
    blob = wrapper.wrap(new_data_key(), "t-42")
    with pytest.raises(VerificationFailed, match="belongs to tenant 't-42'"):
        wrapper.unwrap(blob, "t-43")
    moved = blob.replace(b'"t-42"', b'"t-43"')  # record relabelled: the AAD still says t-42
    with pytest.raises(VerificationFailed, match="fails authentication"):
        wrapper.unwrap(moved, "t-43")


def test_unwrap_with_another_master_key_fails(wrapper: KeyWrapper) -> None:
    blob = wrapper.wrap(new_data_key(), "t-42")
    other = parse_master_key(generate_master_key())
    with pytest.raises(VerificationFailed, match="wrapped by master key"):
        other.unwrap(blob, "t-42")
    forged = blob.replace(wrapper.key_id.encode(), other.key_id.encode())
    with pytest.raises(VerificationFailed, match="fails authentication"):
        other.unwrap(forged, "t-42")


def test_tampered_or_malformed_record_fails(wrapper: KeyWrapper) -> None:
    record = json.loads(wrapper.wrap(new_data_key(), "t-42"))
    wrapped = bytearray(base64.b64decode(record["wrapped"]))
    wrapped[0] ^= 1
    tampered = {**record, "wrapped": base64.b64encode(bytes(wrapped)).decode()}
    for blob in (
        json.dumps(tampered).encode(),
        json.dumps({**record, "version": 2}).encode(),
        json.dumps({**record, "alg": "A128GCM"}).encode(),
        json.dumps({**record, "nonce": "not base64!"}).encode(),
        json.dumps({k: v for k, v in record.items() if k != "wrapped"}).encode(),
        b"not json",
        b"[]",
        b"\xff\xfe",
    ):
        with pytest.raises(VerificationFailed):
            wrapper.unwrap(blob, "t-42")


def test_wrap_refuses_bad_tenant_id_and_key_length(wrapper: KeyWrapper) -> None:
    with pytest.raises(BadInput):
        wrapper.wrap(new_data_key(), "")
    with pytest.raises(BadInput):
        wrapper.wrap(new_data_key(), "t\x0042")
    with pytest.raises(TerminalError, match="32 bytes"):
        wrapper.wrap(b"short", "t-42")


SECRET_31 = base64.b64encode(b"S" * 31).decode()
SECRET_33 = base64.b64encode(b"S" * 33).decode()


@pytest.mark.parametrize(
    "text",
    [SECRET_31, SECRET_33, base64.b64encode(b"S" * 16).decode(), "not*base64*at*all*secret", "   "],
)
def test_bad_master_key_text_is_bad_input_without_echo(text: str) -> None:
    with pytest.raises(BadInput, match="TENANT_EXPORT_MASTER_KEY") as caught:
        parse_master_key(text)
    message = str(caught.value)
    if text.strip():
        assert text not in message
        assert text[:8] not in message
    error = caught.value  # no chained error (e.g. binascii's) for --debug to print
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_master_key_forms_accepted() -> None:
    raw = os.urandom(32)
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    first, second = parse_master_key(f"  {standard}\n"), parse_master_key(urlsafe)
    assert first.key_id == second.key_id
    assert first.key_id.startswith("local:")
    assert standard not in repr(first) and standard not in first.key_id


@pytest.mark.parametrize(
    "key_id", ["kms:alias/tenant-backups", "arn:aws:kms:eu-central-1:111122223333:key/abcd"]
)
def test_kms_key_ids_route_to_the_kms_wrapper(key_id: str) -> None:
    wrapper = parse_master_key(key_id)
    assert isinstance(wrapper, KmsKeyWrapper)
    assert wrapper.key_id == key_id
    with pytest.raises(TerminalError, match="KMS key ids are not supported yet"):
        wrapper.wrap(new_data_key(), "t-42")
    with pytest.raises(TerminalError, match="KMS key ids are not supported yet"):
        wrapper.unwrap(b"{}", "t-42")


def test_local_wrapper_refuses_wrong_length_kek() -> None:
    with pytest.raises(BadInput):
        LocalKeyWrapper(b"k" * 16)

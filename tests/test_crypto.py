"""Envelope keys and the TXE1 streaming AEAD (storage.keys, storage.aead): round trips,
tampering, the writer's behaviour, random access, memory, data key ids in the header (format 2)
and the local key wrapper. The documented test vectors are in tests/test_format_vectors.py."""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import os
import struct
import tracemalloc
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kernel.errors import BadInput, TerminalError, VerificationFailed
from storage.aead import (
    HEADER_BYTES,
    HEADER_BYTES_V1,
    MAX_SEGMENT_SIZE,
    SEGMENT_SIZE,
    TAG_BYTES,
    EncryptingWriter,
    Keys,
    SeekableDecryptor,
    ciphertext_size,
    decrypt_stream,
    object_associated_data,
    plaintext_size,
)
from storage.datakeys import DataKeys
from storage.keys import (
    KeyWrapper,
    KmsKeyWrapper,
    LocalKeyWrapper,
    WrapContext,
    Wrapped,
    generate_master_key,
    new_data_key,
    parse_master_key,
)
from tests.test_format_vectors import encrypt_v1, reference_decrypt

SEG = 64
DEK = bytes(range(32))
AD = object_associated_data("t-42", "tables/members.parquet")


def encrypt(
    plaintext: bytes, *, dek: Keys = DEK, ad: bytes = AD, seg: int = SEG, piece: int = 7
) -> bytes:
    sink = io.BytesIO()
    with EncryptingWriter(sink, dek, ad, segment_size=seg) as writer:
        for start in range(0, len(plaintext), piece):
            writer.write(plaintext[start : start + piece])
    return sink.getvalue()


def decrypt(ciphertext: bytes, *, dek: Keys = DEK, ad: bytes = AD, chunk: int = 1000) -> bytes:
    chunks = (ciphertext[i : i + chunk] for i in range(0, len(ciphertext), chunk))
    return b"".join(decrypt_stream(chunks, dek, ad))


def segments(ciphertext: bytes, seg: int = SEG) -> list[bytes]:
    body = ciphertext[HEADER_BYTES:]
    return [body[i : i + seg + TAG_BYTES] for i in range(0, len(body), seg + TAG_BYTES)]


def seekable(ciphertext: bytes, *, dek: Keys = DEK, ad: bytes = AD) -> SeekableDecryptor:
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
    assert first[13:45] != second[13:45] and first[45:52] != second[45:52]
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]


def test_default_segment_size_is_one_mib_and_the_header_names_the_key() -> None:
    ciphertext = encrypt(b"x", seg=SEGMENT_SIZE)
    assert HEADER_BYTES == 52
    assert ciphertext[:13] == b"TXE1\x02" + struct.pack(">II", 1024 * 1024, 1)


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
        (9, "sealed under data key 2147483649, which the tenant's key record does not hold"),
        (12, "sealed under data key 129"),  # the data key id
        (20, "segment 0 fails authentication"),  # salt
        (48, "segment 0 fails authentication"),  # nonce prefix
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


@pytest.mark.parametrize("garbage", [b"\x00", b"x" * 15, b"x" * 100, os.urandom(SEG + TAG_BYTES)],
                         ids=["nul", "15-bytes", "100-bytes", "random-segment"])
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
    for header in (b"TXE1\x01" + struct.pack(">I", MAX_SEGMENT_SIZE + 1) + bytes(39),
                   b"TXE1\x02" + struct.pack(">II", MAX_SEGMENT_SIZE + 1, 1) + bytes(39)):
        with pytest.raises(VerificationFailed, match="segment size"):
            decrypt(header + bytes(100))


# --- data key ids (format 2) -------------------------------------------------------------------

KEY_2 = bytes(range(32, 64))
ROTATED = DataKeys({1: DEK, 2: KEY_2}, active=2)


def test_the_active_key_seals_and_its_id_is_in_the_header() -> None:
    ciphertext = encrypt(PLAIN, dek=ROTATED)
    assert ciphertext[9:13] == struct.pack(">I", 2)
    assert decrypt(ciphertext, dek=ROTATED) == PLAIN
    assert seekable(ciphertext, dek=ROTATED).read() == PLAIN
    older = encrypt(PLAIN)  # sealed under key 1 before the rotation: still opens
    assert decrypt(older, dek=ROTATED) == PLAIN
    only_key_2 = DataKeys({2: KEY_2}, 2)
    with pytest.raises(VerificationFailed, match="data key 1, which the tenant's key record"):
        decrypt(older, dek=only_key_2)


def test_a_record_without_the_key_refuses_by_id() -> None:
    ciphertext = encrypt(PLAIN, dek=ROTATED)
    with pytest.raises(VerificationFailed, match=r"data key 2, .* holds \[1\]"):
        decrypt(ciphertext, dek=DEK)
    with pytest.raises(VerificationFailed, match="data key 2"):
        seekable(ciphertext, dek=DEK)


def test_changing_the_key_id_to_another_held_key_fails_authentication() -> None:
    under_1 = encrypt(PLAIN)
    relabelled = under_1[:9] + struct.pack(">I", 2) + under_1[13:]
    with pytest.raises(VerificationFailed, match="segment 0 fails authentication"):
        decrypt(relabelled, dek=ROTATED)


def test_key_id_zero_is_refused() -> None:
    ciphertext = bytearray(encrypt(PLAIN))
    ciphertext[9:13] = bytes(4)
    with pytest.raises(VerificationFailed, match="bad key id 0"):
        decrypt(bytes(ciphertext))


@pytest.mark.parametrize("size", [0, 1, SEG, 3 * SEG + 5])
def test_version_1_objects_stay_readable(size: int) -> None:
    """Written by format 1 (a reference writer from the document): data key 1, 48-byte header."""
    plaintext = os.urandom(size)
    old = encrypt_v1(plaintext, DEK, AD, SEG)
    assert old[4] == 1 and len(old) == ciphertext_size(size, SEG, HEADER_BYTES_V1)
    assert decrypt(old, dek=ROTATED) == plaintext
    for chunk in (1, 47, 49, 1000):
        assert decrypt(old, chunk=chunk) == plaintext
    reader = seekable(old)
    assert reader.size() == size and reader.read() == plaintext
    tampered = bytearray(old)
    tampered[-1] ^= 1
    with pytest.raises(VerificationFailed, match="fails authentication"):
        decrypt(bytes(tampered))


def test_reference_decryptor_reads_what_the_writer_writes() -> None:
    plaintext = os.urandom(5 * SEG + 9)
    assert reference_decrypt(encrypt(plaintext, dek=ROTATED),
                             {1: DEK, 2: KEY_2}, AD) == plaintext


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


# --- key wrapping ------------------------------------------------------------------------------


@pytest.fixture
def wrapper() -> KeyWrapper:
    return parse_master_key(generate_master_key())


CONTEXT = WrapContext("t-42", 2)


def test_wrap_unwrap_round_trip(wrapper: KeyWrapper) -> None:
    assert isinstance(wrapper, LocalKeyWrapper)
    assert isinstance(wrapper, KeyWrapper)
    assert wrapper.alg == "A256GCM"
    dek = new_data_key()
    wrapped = wrapper.wrap(dek, CONTEXT)
    assert wrapped.nonce is not None and len(wrapped.nonce) == 12
    assert len(wrapped.wrapped) == 32 + 16
    assert wrapper.unwrap(wrapped, CONTEXT) == dek
    assert wrapper.wrap(dek, CONTEXT).nonce != wrapped.nonce  # a fresh nonce for every wrap
    assert CONTEXT.aad() == b"tenant-export/v2/data-key\x00t-42\x002"
    assert WrapContext("t-42", None).aad() == b"tenant-export/v1/data-key\x00t-42"


@pytest.mark.parametrize("other", [WrapContext("t-43", 2), WrapContext("t-42", 3),
                                   WrapContext("t-42", None)])
def test_unwrap_for_another_tenant_or_key_id_fails(wrapper: KeyWrapper,
                                                   other: WrapContext) -> None:
    wrapped = wrapper.wrap(new_data_key(), CONTEXT)
    with pytest.raises(VerificationFailed, match="fails authentication"):
        wrapper.unwrap(wrapped, other)


def test_unwrap_with_another_master_key_fails(wrapper: KeyWrapper) -> None:
    wrapped = wrapper.wrap(new_data_key(), CONTEXT)
    other = parse_master_key(generate_master_key())
    assert other.key_id != wrapper.key_id
    with pytest.raises(VerificationFailed, match=f"fails authentication under master key "
                       f"{other.key_id}"):
        other.unwrap(wrapped, CONTEXT)


def test_tampered_wrapped_key_fails(wrapper: KeyWrapper) -> None:
    wrapped = wrapper.wrap(new_data_key(), CONTEXT)
    assert wrapped.nonce is not None
    for position in range(len(wrapped.wrapped)):
        flipped = bytearray(wrapped.wrapped)
        flipped[position] ^= 1
        with pytest.raises(VerificationFailed):
            wrapper.unwrap(Wrapped(bytes(flipped), wrapped.nonce), CONTEXT)
    with pytest.raises(VerificationFailed, match="nonce"):
        wrapper.unwrap(Wrapped(wrapped.wrapped, None), CONTEXT)
    with pytest.raises(VerificationFailed):
        wrapper.unwrap(Wrapped(wrapped.wrapped, bytes(12)), CONTEXT)


def test_wrap_refuses_bad_tenant_id_and_key_length(wrapper: KeyWrapper) -> None:
    with pytest.raises(BadInput):
        WrapContext("", 1)
    with pytest.raises(BadInput):
        WrapContext("t\x0042", 1)
    with pytest.raises(TerminalError, match="32 bytes"):
        wrapper.wrap(b"short", CONTEXT)


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
    "key_id", ["kms:alias/tenant-backups", "arn:aws:kms:eu-central-1:111122223333:key/abcd",
               "kms:arn:aws:kms:eu-central-1:111122223333:key/abcd", "kms:1234abcd-12ab"]
)
def test_kms_key_ids_route_to_the_kms_wrapper(key_id: str) -> None:
    """Parsing makes no call: the key is looked up (and used) only when a record needs it
    (tests/test_keys_kms.py uses moto's KMS)."""
    wrapper = parse_master_key(key_id, kms_client=object())
    assert isinstance(wrapper, KmsKeyWrapper)
    assert wrapper.alg == "KMS"
    assert key_id.removeprefix("kms:") in repr(wrapper)
    if ":key/" in key_id:  # a key ARN names the key itself: no lookup needed
        assert wrapper.key_id == key_id.removeprefix("kms:")


def test_local_wrapper_refuses_wrong_length_kek() -> None:
    with pytest.raises(BadInput):
        LocalKeyWrapper(b"k" * 16)

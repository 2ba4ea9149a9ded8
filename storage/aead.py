"""Streaming AEAD for backup objects (format TXE1, ``docs/backup-format.md``).

In the style of Tink's AES-GCM-HKDF streaming and age's STREAM: a per-object key derived with
HKDF-SHA256 from one of the tenant's data keys, a random salt and the caller's associated data;
the plaintext cut into fixed-size segments, each sealed with AES-256-GCM under a nonce made of a
random prefix, the segment counter and a last-segment flag, with the header as associated data.
Reordering, swapping, duplicating or truncating segments, editing the header, and moving an
object to another tenant or name all fail authentication. Memory stays bounded by one segment
whatever the object's size.

Version 2 (written) names the data key in the header, as Tink's keysets put a key id in every
ciphertext, so a tenant's key can rotate; version 1 (read only) has one data key, key 1.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kernel.errors import TerminalError, VerificationFailed
from storage.datakeys import FIRST_KEY_ID, DataKeys

MAGIC = b"TXE1"
VERSION = 2
LEGACY_VERSION = 1
SALT_BYTES = 32
NONCE_PREFIX_BYTES = 7
TAG_BYTES = 16
HEADER_V1 = struct.Struct(">4sBI32s7s")  # magic, version, segment size, salt, nonce prefix
HEADER_V2 = struct.Struct(">4sBII32s7s")  # magic, version, segment size, key id, salt, prefix
HEADERS = {LEGACY_VERSION: HEADER_V1, VERSION: HEADER_V2}
HEADER_BYTES = HEADER_V2.size  # 52: what this version writes
HEADER_BYTES_V1 = HEADER_V1.size  # 48
SEGMENT_SIZE = 1024 * 1024
MIN_SEGMENT_SIZE = 16
MAX_SEGMENT_SIZE = 64 * 1024 * 1024  # a reader refuses more: a header must not dictate memory
MAX_SEGMENTS = 2**32  # the counter is 4 bytes
HKDF_INFO_PREFIXES = {LEGACY_VERSION: b"tenant-export/v1/", VERSION: b"tenant-export/v2/"}
Keys = DataKeys | bytes
"""What seals or opens objects: a tenant's data keys, or one bare key (data key 1)."""


@dataclass(frozen=True)
class Header:
    """The header that starts every encrypted object (52 bytes; 48 in version 1)."""

    segment_size: int
    salt: bytes
    nonce_prefix: bytes
    key_id: int = FIRST_KEY_ID
    version: int = VERSION

    @property
    def size(self) -> int:
        return HEADERS[self.version].size

    def pack(self) -> bytes:
        if self.version == LEGACY_VERSION:
            return HEADER_V1.pack(MAGIC, self.version, self.segment_size, self.salt,
                                  self.nonce_prefix)
        return HEADER_V2.pack(MAGIC, self.version, self.segment_size, self.key_id, self.salt,
                              self.nonce_prefix)

    @classmethod
    def parse(cls, data: bytes) -> Header:
        """Raises ``VerificationFailed`` on a short header, bad magic/version, segment size or
        key id (0 is never a key id)."""
        if len(data) < 5:
            raise VerificationFailed(f"truncated: header has {len(data)} of {HEADER_BYTES} bytes")
        magic, version = data[:4], data[4]
        layout = HEADERS.get(version)
        if magic != MAGIC or layout is None:
            raise VerificationFailed(f"bad magic/version {magic!r}/{version}: not a TXE1 object")
        if len(data) < layout.size:
            raise VerificationFailed(f"truncated: header has {len(data)} of {layout.size} bytes")
        if version == LEGACY_VERSION:
            _, _, segment_size, salt, prefix = HEADER_V1.unpack(data[:layout.size])
            key_id = FIRST_KEY_ID
        else:
            _, _, segment_size, key_id, salt, prefix = HEADER_V2.unpack(data[:layout.size])
            if key_id == 0:
                raise VerificationFailed("bad key id 0 in the header: data keys count from 1")
        _check_segment_size(segment_size, VerificationFailed)
        return cls(segment_size, salt, prefix, key_id, version)


def _check_segment_size(size: int, error: type[Exception]) -> None:
    if not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
        raise error(f"segment size {size} outside {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes")


class _SegmentCipher:
    """AES-256-GCM under the per-object key; knows the nonce rule of the format."""

    def __init__(self, keys: Keys, header: Header, associated_data: bytes) -> None:
        dek = DataKeys.of(keys).key(header.key_id)
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=header.salt,
            info=HKDF_INFO_PREFIXES[header.version] + bytes(associated_data),
        ).derive(dek)
        self._aead = AESGCM(key)
        self._prefix = header.nonce_prefix
        # The header is every segment's AD: otherwise the segment-size field of a one-segment
        # object could be changed (to any size >= its length) without failing authentication.
        self._aad = header.pack()

    def _nonce(self, index: int, final: bool) -> bytes:
        if index >= MAX_SEGMENTS:
            raise TerminalError(f"object too large: more than {MAX_SEGMENTS} segments")
        return self._prefix + struct.pack(">IB", index, 1 if final else 0)

    def seal(self, index: int, plaintext: Any, final: bool) -> bytes:
        return self._aead.encrypt(self._nonce(index, final), plaintext, self._aad)

    def open(self, index: int, segment: Any, final: bool) -> bytes:
        """Decrypt segment ``index``; ``final`` is where the reader found it (at the end or not).

        On failure, tries the other flag only to name the fault precisely: a final segment found
        before the end means appended data; a non-final one at the end means truncation.
        """
        if len(segment) < TAG_BYTES:
            raise VerificationFailed(f"truncated: segment {index} is shorter than its tag")
        try:
            plaintext = self._aead.decrypt(self._nonce(index, final), segment, self._aad)
        except InvalidTag:
            try:
                self._aead.decrypt(self._nonce(index, not final), segment, self._aad)
            except InvalidTag:
                raise VerificationFailed(
                    f"segment {index} fails authentication (corrupted, truncated, reordered, "
                    "or wrong data key / associated data)"
                ) from None
            if final:
                raise VerificationFailed("truncated: no final segment") from None
            raise VerificationFailed(f"data after the final segment {index}") from None
        if final and index > 0 and not plaintext:
            raise VerificationFailed(f"empty final segment {index} after data (non-canonical)")
        return plaintext


def object_associated_data(tenant_id: str, object_name: str) -> bytes:
    """``tenant NUL name`` in UTF-8: binds an object to its tenant and name (neither has NUL)."""
    if not tenant_id or not object_name or "\0" in tenant_id or "\0" in object_name:
        raise TerminalError(f"cannot bind object {object_name!r} of tenant {tenant_id!r}")
    return f"{tenant_id}\0{object_name}".encode()


def ciphertext_size(plaintext_size: int, segment_size: int = SEGMENT_SIZE,
                    header_bytes: int = HEADER_BYTES) -> int:
    """Size of the encrypted object for a plaintext of ``plaintext_size`` bytes."""
    segments = max(1, -(-plaintext_size // segment_size))
    return header_bytes + plaintext_size + segments * TAG_BYTES


def plaintext_size(ciphertext_bytes: int, segment_size: int,
                   header_bytes: int = HEADER_BYTES) -> int:
    """Inverse of :func:`ciphertext_size`; raises ``VerificationFailed`` on an impossible size."""
    body = ciphertext_bytes - header_bytes
    full = segment_size + TAG_BYTES
    segments = max(1, -(-body // full))
    last = body - (segments - 1) * full
    if body < TAG_BYTES or last < TAG_BYTES or (last == TAG_BYTES and segments > 1):
        raise VerificationFailed(
            f"truncated: {ciphertext_bytes} bytes is not a possible TXE1 object size "
            f"for segments of {segment_size} bytes"
        )
    return body - segments * TAG_BYTES


class EncryptingWriter(io.RawIOBase):
    """A write-only stream that encrypts into ``sink`` (which it never closes).

    Holds at most one segment of plaintext: a full segment is sealed as soon as one more byte
    arrives (only then is it known not to be the last). ``close()`` seals the final segment and
    must be called once the plaintext is complete; leaving the ``with`` block on an exception,
    or dropping the writer unclosed, aborts instead, so the sink holds a stream that fails
    verification ("no final segment") rather than a valid-looking truncated object.
    """

    def __init__(
        self, sink: Any, keys: Keys, associated_data: bytes, *, segment_size: int = SEGMENT_SIZE
    ) -> None:
        super().__init__()
        _check_segment_size(segment_size, TerminalError)
        keys = DataKeys.of(keys)
        self._sink = sink
        self.segment_size = segment_size
        self._header = Header(segment_size, os.urandom(SALT_BYTES), os.urandom(NONCE_PREFIX_BYTES),
                              keys.active)
        self._cipher = _SegmentCipher(keys, self._header, associated_data)
        self._buffer = bytearray()
        self.max_buffered = 0  # high-water mark of the plaintext buffer, for tests and bench
        self._index = 0
        self._sha256 = hashlib.sha256()
        self.plaintext_bytes = 0
        self.ciphertext_bytes = 0
        self.finished = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        self._sha256.update(view)
        size, pos, seg = view.nbytes, 0, self.segment_size
        while pos < size:
            if len(self._buffer) == seg:  # more follows, so the buffered segment is not last
                self._emit(self._buffer, final=False)
                self._buffer.clear()
            if not self._buffer and size - pos > seg:  # a whole non-final segment: no copy
                self._emit(view[pos : pos + seg], final=False)
                pos += seg
                continue
            take = min(seg - len(self._buffer), size - pos)
            self._buffer += view[pos : pos + take]
            pos += take
            self.max_buffered = max(self.max_buffered, len(self._buffer))
        self.plaintext_bytes += size
        return size

    def close(self) -> None:
        """Seal the final segment (an empty plaintext gives one empty segment)."""
        if self.closed:
            return
        try:
            self._emit(self._buffer, final=True)
            self._buffer.clear()
            self.finished = True
        finally:
            super().close()

    def abort(self) -> None:
        """Close without a final segment: whatever reached the sink will fail verification."""
        if hasattr(self, "_buffer"):  # absent when __init__ itself failed
            self._buffer.clear()
        super().close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # io.IOBase's finaliser would call close(), sealing a truncated stream as complete.
        if not self.closed:
            self.abort()

    @property
    def plaintext_sha256(self) -> str:
        """Hex SHA-256 of the plaintext written so far (for manifests)."""
        return self._sha256.hexdigest()

    def _emit(self, plaintext: Any, final: bool) -> None:
        if self._index == 0:
            self._write_sink(self._header.pack())
        self._write_sink(self._cipher.seal(self._index, plaintext, final))
        self._index += 1

    def _write_sink(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._sink.write(view)
            if written is None:  # a non-blocking raw sink that would block
                raise TerminalError("the sink of an EncryptingWriter accepted no bytes")
            self.ciphertext_bytes += written
            view = view[written:]


def decrypt_stream(chunks: Iterable[bytes], keys: Keys, associated_data: bytes
                   ) -> Iterator[bytes]:
    """Yield the plaintext segment by segment from ciphertext chunks of any size (version 1 or
    2; the data key is the one the header names).

    Each yielded piece is authenticated, but the object as a whole is only once the iterator is
    exhausted without error (the final segment is checked last): do not publish before then.

    Raises:
        VerificationFailed: bad magic/version, a segment failing authentication, truncation,
            or data after the final segment. The message names the segment, not the object.
    """
    source = iter(chunks)
    buffer = bytearray()
    exhausted = False

    def fill(wanted: int) -> None:
        nonlocal exhausted
        while len(buffer) < wanted and not exhausted:
            chunk = next(source, None)
            if chunk is None:
                exhausted = True
            else:
                buffer.extend(chunk)

    fill(HEADER_BYTES)
    header = Header.parse(bytes(buffer[:HEADER_BYTES]))
    del buffer[:header.size]
    cipher = _SegmentCipher(keys, header, associated_data)
    full = header.segment_size + TAG_BYTES
    index = 0
    while True:
        fill(full + 1)  # one byte beyond a segment tells whether it is the last
        if len(buffer) > full:
            yield cipher.open(index, buffer[:full], final=False)
            del buffer[:full]
            index += 1
        else:
            yield cipher.open(index, bytes(buffer), final=True)
            return


class SeekableDecryptor(io.RawIOBase):
    """A read-only, seekable file over the plaintext of an object read by byte ranges.

    ``read_range(start, end)`` returns ciphertext bytes ``[start, end)`` (end exclusive, as a
    slice; an S3 Range header is ``bytes=start-(end-1)``). Only the segments a read touches are
    fetched and decrypted; the most recent one is cached. The final segment is authenticated
    when the reader opens, so the plaintext size it reports is proven, not taken on trust.
    Segments never read are not checked: use :func:`decrypt_stream` to verify a whole object.
    """

    def __init__(
        self,
        read_range: Callable[[int, int], bytes],
        ciphertext_size: int,
        keys: Keys,
        associated_data: bytes,
    ) -> None:
        super().__init__()
        self._read_range = read_range
        self._ciphertext_size = ciphertext_size
        header = Header.parse(self._fetch(0, min(HEADER_BYTES, ciphertext_size)))
        self._cipher = _SegmentCipher(keys, header, associated_data)
        self._header_bytes = header.size
        self._segment_size = header.segment_size
        self._size = plaintext_size(ciphertext_size, header.segment_size, header.size)
        self._segments = max(1, -(-self._size // self._segment_size))
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None
        self._segment(self._segments - 1)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        """Plaintext size in bytes."""
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("seek on a closed SeekableDecryptor")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position, across segments, until it or EOF is hit."""
        if self.closed:
            raise ValueError("read from a closed SeekableDecryptor")
        out = memoryview(buffer).cast("B")
        done = 0
        while done < out.nbytes and self._pos < self._size:
            index, offset = divmod(self._pos, self._segment_size)
            plaintext = self._segment(index)
            take = min(out.nbytes - done, len(plaintext) - offset)
            out[done : done + take] = plaintext[offset : offset + take]
            done += take
            self._pos += take
        return done

    def close(self) -> None:
        self._cached = None
        super().close()

    def _segment(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        full = self._segment_size + TAG_BYTES
        start = self._header_bytes + index * full
        end = min(start + full, self._ciphertext_size)
        final = index == self._segments - 1
        plaintext = self._cipher.open(index, self._fetch(start, end), final=final)
        self._cached = (index, plaintext)
        return plaintext

    def _fetch(self, start: int, end: int) -> bytes:
        data = self._read_range(start, end)
        if len(data) != end - start:
            raise VerificationFailed(
                f"truncated: range {start}-{end} returned {len(data)} of {end - start} bytes"
            )
        return bytes(data)

"""Documents fetched by a bounded read-ahead pool (``flows.fetch_pool``): the ZIP parts are the
same bytes whatever the pool size, GETs overlap up to the pool size and never beyond it, the
bytes buffered ahead never exceed the budget, and one failed GET aborts the export with nothing
published and no thread left behind. Assertions are on behaviour, never on timing."""

from __future__ import annotations

import hashlib
import io
import random
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flows import packaging
from flows.fetch_pool import FetchLimits, ReadAhead
from flows.retry import RETRY_DELAYS
from kernel.errors import StorageError, TransientStorageError
from sources.documents import CHUNK_BYTES
from sources.documents import open_blob as real_open
from tests import s3proxy
from tests.conftest import Platform
from tests.s3proxy import S3Proxy, on

MIB = 1024 * 1024

# -- the pool alone, over fake streams ----------------------------------------------------------


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


class Streams:
    """Fake blobs: records what was opened, read and closed, and when each stream ended."""

    def __init__(self, blobs: dict[int, bytes | None], chunk: int,
                 before_open: Callable[[int], None] = lambda _i: None) -> None:
        self.blobs, self.chunk, self.before_open = blobs, chunk, before_open
        self.lock = threading.Lock()
        self.opened: list[int] = []
        self.read: dict[int, int] = {}
        self.closed: set[int] = set()

    def open(self, item: int) -> Iterator[bytes] | None:
        self.before_open(item)
        with self.lock:
            self.opened.append(item)
        data = self.blobs[item]
        return None if data is None else self._stream(item, data)

    def _stream(self, item: int, data: bytes) -> Iterator[bytes]:
        return FakeStream(self, item, chunked(data, self.chunk))


class FakeStream(Iterator[bytes]):
    """A blob's chunks; counts what is read and knows when it is closed (even unstarted)."""

    def __init__(self, owner: Streams, item: int, chunks: list[bytes]) -> None:
        self.owner, self.item, self.chunks = owner, item, iter(chunks)

    def __next__(self) -> bytes:
        try:
            piece = next(self.chunks)
        except StopIteration:
            self.close()
            raise
        with self.owner.lock:
            self.owner.read[self.item] = self.owner.read.get(self.item, 0) + len(piece)
        return piece

    def close(self) -> None:
        with self.owner.lock:
            self.owner.closed.add(self.item)


def read_all(fetcher: ReadAhead[int]) -> list[tuple[int, bytes | None]]:
    return [(item, None if chunks is None else b"".join(chunks)) for item, chunks in fetcher]


def collect(fetcher: ReadAhead[int], into: list[int]) -> None:
    """Read every item to the end, noting each item as it comes."""
    for item, chunks in fetcher:
        for _chunk in chunks or []:
            pass
        into.append(item)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state of the pool (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.001)


def read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("read-ahead")]


@pytest.mark.parametrize("workers", [1, 2, 4, 16])
def test_items_come_back_in_order_with_their_bytes(workers: int) -> None:
    rng = random.Random(workers)
    blobs: dict[int, bytes | None] = {i: rng.randbytes(rng.choice([0, 1, 7, 40, 130]))
                                      for i in range(60)}
    blobs[13] = blobs[40] = None  # gone
    streams = Streams(blobs, chunk=16)
    limits = FetchLimits(workers=workers, budget_bytes=200, buffer_limit=64, chunk_bytes=16)
    with ReadAhead(range(60), streams.open, limits) as fetcher:
        assert read_all(fetcher) == list(blobs.items())
        assert fetcher.buffered == 0
        assert fetcher.high_water <= 200
    assert sorted(streams.opened) == list(range(60))
    assert read_ahead_threads() == []


def test_later_documents_are_fetched_while_the_first_one_waits() -> None:
    """The first GET only answers once the fifth has started: impossible one at a time."""
    fifth = threading.Event()

    def gate(item: int) -> None:
        if item == 4:
            fifth.set()
        if item == 0 and not fifth.wait(20):
            raise AssertionError("the fifth document was not fetched ahead")

    blobs: dict[int, bytes | None] = {i: bytes([i]) * 10 for i in range(8)}
    streams = Streams(blobs, chunk=4, before_open=gate)
    with ReadAhead(range(8), streams.open, FetchLimits(workers=5, chunk_bytes=4)) as fetcher:
        assert read_all(fetcher) == list(blobs.items())


def test_the_budget_holds_while_the_writer_waits() -> None:
    """The first document stalls; the others fill the budget, and stop there."""
    limits = FetchLimits(workers=16, budget_bytes=5 * 10, buffer_limit=40, chunk_bytes=10)
    fetcher: ReadAhead[int]

    def stall_first(item: int) -> None:
        if item == 0:  # until every worker waits for room (one more chunk would not fit)
            wait_until(lambda: fetcher.buffered > limits.budget_bytes - limits.chunk_bytes,
                       "a full budget")

    blobs: dict[int, bytes | None] = {i: bytes([i]) * 30 for i in range(40)}
    streams = Streams(blobs, chunk=10, before_open=stall_first)
    with ReadAhead(range(40), streams.open, limits) as fetcher:
        assert read_all(fetcher) == list(blobs.items())
        assert fetcher.high_water == limits.budget_bytes  # reached, never passed
        assert fetcher.buffered == 0


def test_a_large_document_is_streamed_in_its_turn_not_buffered() -> None:
    """Ahead of its turn, a document past ``buffer_limit`` holds at most that much."""
    limits = FetchLimits(workers=4, budget_bytes=1000, buffer_limit=30, chunk_bytes=10)
    read_before_turn: list[int] = []
    streams: Streams

    def note(item: int) -> None:
        if item == 1:  # item 0 is being written: item 1 (large) was read ahead meanwhile
            wait_until(lambda: streams.read.get(1, 0) >= 30, "the large one's buffer full")
            read_before_turn.append(streams.read[1])

    blobs: dict[int, bytes | None] = {0: b"a" * 5, 1: bytes(range(200)), 2: b"c" * 5}
    streams = Streams(blobs, chunk=10)
    with ReadAhead(range(3), streams.open, limits) as fetcher:
        items = iter(fetcher)
        first, chunks = next(items)
        assert (first, b"".join(chunks or [])) == (0, b"a" * 5)
        note(1)
        assert [(i, None if c is None else b"".join(c)) for i, c in items] == [
            (1, bytes(range(200))), (2, b"c" * 5)]
    assert read_before_turn == [30]


def test_a_failed_fetch_is_raised_in_turn_and_everything_is_closed() -> None:
    boom = StorageError("reading document 'k7': InternalError")

    def fail(item: int) -> None:
        if item == 7:
            raise boom

    blobs: dict[int, bytes | None] = dict.fromkeys(range(30), b"x" * 50)
    streams = Streams(blobs, chunk=10, before_open=fail)
    got: list[int] = []
    limits = FetchLimits(workers=6, budget_bytes=40, buffer_limit=20, chunk_bytes=10)
    with ReadAhead(range(30), streams.open, limits) as fetcher, \
            pytest.raises(StorageError) as raised:
        collect(fetcher, got)
    assert raised.value is boom
    assert got == list(range(7))  # every document before it, in order, none after
    assert all(streams.read[i] == 50 for i in got)
    assert max(streams.opened) < 7 + 6  # nothing fetched beyond the window
    assert set(streams.opened) - {7} <= streams.closed  # streams read ahead were closed
    assert fetcher.buffered == 0
    assert read_ahead_threads() == []


def test_a_failing_row_source_is_raised_at_its_turn() -> None:
    def rows() -> Iterator[int]:
        yield from range(5)
        raise StorageError("the database went away")

    streams = Streams(dict.fromkeys(range(5), b"d"), chunk=1)
    seen: list[int] = []
    with ReadAhead(rows(), streams.open, FetchLimits(workers=8)) as fetcher, \
            pytest.raises(StorageError, match="went away"):
        collect(fetcher, seen)
    assert seen == list(range(5))  # the rows before the failure, each in its turn
    assert sorted(streams.opened) == list(range(5))


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="workers"):
        FetchLimits(workers=0)
    with pytest.raises(ValueError, match="budget"):
        FetchLimits(budget_bytes=-1)
    assert FetchLimits().workers == 16  # the default of TENANT_EXPORT_FETCH_CONCURRENCY


# -- the export, on moto (behind the latency and fault proxy where it matters) ------------------

LARGE_ID = 120  # the document past the buffering limit of ``SMALL_LIMITS``
SMALL_LIMITS = {"budget_bytes": 4 * MIB, "buffer_limit": 2 * MIB}
SIZES = [0, 1, 10_000, 300_000, 600_000, CHUNK_BYTES, 1_100_000, 64_000, 200_000, 33_333]


def add_documents(platform: Platform) -> dict[int, bytes]:
    """40 more documents of t-1 with mixed sizes (one of 5 MiB), a row whose key is NULL,
    and upload dates on every row (so ZIP entries do not carry the export's time)."""
    rng = random.Random(7)
    blobs: dict[int, bytes] = {}
    with sqlite3.connect(platform.source_url.removeprefix("sqlite:///")) as db:
        db.execute("ALTER TABLE documents ADD COLUMN uploaded_at TEXT")
        db.execute("UPDATE documents SET uploaded_at = '2024-01-02T03:04:05+00:00'")
        for n in range(40):
            doc_id = 100 + n
            blobs[doc_id] = rng.randbytes(5 * MIB + 3 if doc_id == LARGE_ID else SIZES[n % 10])
            key = f"t1/many/{doc_id}"
            platform.s3.put_object(Bucket=platform.documents_bucket, Key=key,
                                   Body=blobs[doc_id])
            db.execute("INSERT INTO documents VALUES (?, 't-1', ?, ?, ?)",
                       (doc_id, f"file-{doc_id}.bin", key, f"2024-02-{n % 28 + 1:02d}T10:00:00Z"))
        db.execute("INSERT INTO documents VALUES (200, 't-1', 'lost.bin', NULL, NULL)")
    return blobs


def run_export() -> dict[str, Any]:
    from flows.export_flow import ExportRequest, offboarding_export

    return offboarding_export(ExportRequest(tenant_id="t-1", link_ttl_seconds=600))


class Pools:
    """Runs the export with given fetch limits and keeps each ``ReadAhead`` for inspection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import flows.package_documents as module

        self.made: list[ReadAhead[Any]] = []
        self.limits: dict[str, int] = {}
        pools = self

        class Kept(ReadAhead[Any]):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                pools.made.append(self)

        real = module.write_documents

        def write_documents(*args: Any, **kwargs: Any) -> Any:
            if self.limits:
                kwargs["fetch"] = FetchLimits(**self.limits)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, "ReadAhead", Kept)
        monkeypatch.setattr(packaging, "write_documents", write_documents)


def zip_parts(platform: Platform, result: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every ZIP part and of index.csv, as stored."""
    prefix = packaging.package_prefix(result["tenant_id"], result["export_id"])
    return {f["path"]: hashlib.sha256(platform.get(prefix + f["path"])).hexdigest()
            for f in result["files"]
            if f["path"].startswith("documents/") and f["path"].endswith((".zip", ".csv"))}


def test_zip_parts_are_identical_whatever_the_pool_size(sqlite_platform: Platform,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = add_documents(sqlite_platform)
    monkeypatch.setenv("TENANT_EXPORT_ZIP_PART_BYTES", str(4 * MIB))  # several parts
    pools = Pools(monkeypatch)
    hashes: dict[int, dict[str, str]] = {}
    for workers in (1, 4, 16):
        pools.limits = {"workers": workers, **SMALL_LIMITS}
        result = run_export()
        hashes[workers] = zip_parts(sqlite_platform, result)
        fetcher = pools.made[-1]
        assert fetcher.limits.workers == workers
        assert fetcher.high_water <= SMALL_LIMITS["budget_bytes"]  # (4) memory bounded
        assert fetcher.buffered == 0
        assert [(d["document_id"], d["reason"]) for d in result["documents_missing"]] == [
            ("6", "object not found"), ("200", "key is NULL")]
    assert hashes[1] == hashes[4] == hashes[16]
    assert len([p for p in hashes[1] if p.endswith(".zip")]) >= 4

    # and the parts hold every document, in the rows' order, byte for byte
    prefix = packaging.package_prefix(result["tenant_id"], result["export_id"])
    members: list[bytes] = []
    for part in sorted(p for p in hashes[16] if p.endswith(".zip")):
        with zipfile.ZipFile(io.BytesIO(sqlite_platform.get(prefix + part))) as archive:
            members += [archive.read(info) for info in archive.infolist()]
    assert members[-40:] == [blobs[i] for i in sorted(blobs)]
    assert len(blobs[LARGE_ID]) > SMALL_LIMITS["budget_bytes"]  # it could only be streamed


@pytest.fixture
def proxy(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Proxy]:
    """The pipeline talks to moto through the proxy, 20 ms a request; retry waits made tiny."""
    from botocore.retries.standard import ExponentialBackoff

    from flows import export_flow

    for step in (export_flow.write_package, export_flow.verify_package,
                 export_flow.publish_manifest, export_flow.discard_package):
        monkeypatch.setattr(step, "retry_delay_seconds", [0.05] * len(RETRY_DELAYS))
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    with S3Proxy(sqlite_platform.endpoint, latency_s=0.02) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", running.url)
        yield running


class InFlight:
    """Document GETs in flight at once, seen by the proxy and by the pipeline.

    At the proxy, the first GETs are held until ``target`` are there at once (or 20 s pass):
    that proves the pool sends that many together, without relying on timing. In the
    pipeline, a GET is in flight from ``open_blob`` until its body is read or closed.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, bucket: str, target: int) -> None:
        import flows.package_documents as module

        self.cond = threading.Condition()
        self.at_proxy = self.max_at_proxy = self.in_pipeline = self.max_in_pipeline = 0
        self.released = False
        real_serve = s3proxy._Handler.do_GET

        def serve(handler: Any) -> None:
            if not handler.path.startswith(f"/{bucket}/"):
                return real_serve(handler)
            with self.cond:
                self.at_proxy += 1
                self.max_at_proxy = max(self.max_at_proxy, self.at_proxy)
                self.released = self.released or self.at_proxy >= target
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.released, timeout=20)
            try:
                return real_serve(handler)
            finally:
                with self.cond:
                    self.at_proxy -= 1

        def open_blob(client: Any, bucket_: str, key: str | None) -> Any:
            self._moved(+1)
            try:
                chunks = real_open(client, bucket_, key)
            except BaseException:
                self._moved(-1)
                raise
            if chunks is None:
                self._moved(-1)
                return None
            return Tracked(chunks, lambda: self._moved(-1))

        monkeypatch.setattr(s3proxy._Handler, "do_GET", serve)
        monkeypatch.setattr(module, "open_blob", open_blob)

    def _moved(self, delta: int) -> None:
        with self.cond:
            self.in_pipeline += delta
            self.max_in_pipeline = max(self.max_in_pipeline, self.in_pipeline)


class Tracked(Iterator[bytes]):
    """A blob's chunks that say once when they are done (read to the end, failed or closed)."""

    def __init__(self, chunks: Iterator[bytes], done: Callable[[], None]) -> None:
        self.chunks, self.done, self.finished = chunks, done, False

    def __next__(self) -> bytes:
        try:
            return next(self.chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()
        if not self.finished:
            self.finished = True
            self.done()


@pytest.mark.parametrize("workers", [4, None], ids=["pool-4", "default-16"])
def test_gets_overlap_up_to_the_pool_size_and_never_beyond(
        sqlite_platform: Platform, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch,
        workers: int | None) -> None:
    add_documents(sqlite_platform)
    Pools(monkeypatch)
    if workers is not None:  # the operator's setting reaches the pool
        monkeypatch.setenv("TENANT_EXPORT_FETCH_CONCURRENCY", str(workers))
    pool_size = workers or FetchLimits().workers
    seen = InFlight(monkeypatch, sqlite_platform.documents_bucket, pool_size)
    result = run_export()
    assert result["documents_missing"][0]["document_id"] == "6"
    assert seen.max_at_proxy >= pool_size > 1  # the server saw them together
    assert seen.max_in_pipeline == pool_size  # and the pipeline never had more open
    assert seen.in_pipeline == 0  # every body read or closed
    documents = proxy.requests(on("GetObject", bucket=sqlite_platform.documents_bucket))
    assert len(documents) == 9 + 40  # one GET a document, no more (200 has no key)


@pytest.mark.parametrize(("status", "code", "error"), [
    (403, "AccessDenied", StorageError),  # terminal: no retry
    (500, "InternalError", TransientStorageError),  # still failing after every retry
], ids=["access-denied", "500-after-retries"])
def test_one_failed_get_aborts_the_export_and_nothing_is_published(
        sqlite_platform: Platform, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch,
        status: int, code: str, error: type[Exception]) -> None:
    add_documents(sqlite_platform)
    pools = Pools(monkeypatch)
    pools.limits = {"workers": 8, **SMALL_LIMITS}
    fault = proxy.fail_next(1000, status=status, code=code,
                            when=on("GetObject", key="t1/many/125"))
    with pytest.raises(error, match=f"t1/many/125.*{code}"):
        run_export()
    assert fault.hits >= 1
    assert sqlite_platform.export_keys() == []  # no datapackage.json, no staged file
    uploads = sqlite_platform.s3.list_multipart_uploads(Bucket=sqlite_platform.export_bucket)
    assert not uploads.get("Uploads")
    assert read_ahead_threads() == []  # every fetch thread joined
    assert all(f.buffered == 0 for f in pools.made)


def test_an_unread_document_releases_its_connection_when_closed() -> None:
    """A read-ahead that aborts closes streams it never read: the response must go back to
    the pool then too (a generator's ``finally`` would not run before its first chunk)."""
    from sources.documents import Chunks

    class Body:
        def __init__(self) -> None:
            self.closed = 0

        def iter_chunks(self, _size: int) -> Iterator[bytes]:
            yield b"ab"
            yield b"c"

        def close(self) -> None:
            self.closed += 1

    unread = Body()
    Chunks(unread, "reading x").close()
    assert unread.closed == 1
    read = Body()
    assert b"".join(Chunks(read, "reading y")) == b"abc" and read.closed == 1

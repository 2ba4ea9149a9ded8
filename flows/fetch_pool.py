"""Documents read ahead by a bounded pool while the ZIP is written in their order.

S3 answers in tens of milliseconds: one GET at a time costs a round trip per document. A
:class:`ReadAhead` keeps up to ``workers`` documents in flight (the one being written and those
after it) and hands them over strictly in the order they came, so the ZIP is the same bytes
whatever the pool size; only the order of the GETs changes.

Memory stays bounded whatever the sizes. A document ahead of the writer is buffered while it
fits ``buffer_limit`` and the shared ``budget_bytes``, reserved a chunk at a time *before* the
chunk is read; past either, its open stream waits and the writer reads the rest in its turn.
The document the writer waits for is never buffered further: it is streamed, so the writer
never waits on the budget, which only documents ahead of it hold (no deadlock).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Literal, TypeVar

from kernel.settings import Settings
from sources.documents import CHUNK_BYTES

T = TypeVar("T")
MIB = 1024 * 1024
DEFAULT_WORKERS = int(Settings.model_fields["fetch_concurrency"].default)


@dataclass(frozen=True)
class FetchLimits:
    """How far documents are read ahead of the writer.

    Args:
        workers: documents in flight at once, the one being written included
            (``settings.fetch_concurrency``); 1 reads them one after another.
        budget_bytes: bytes buffered at once across every document ahead of the writer.
        buffer_limit: bytes one document may buffer; a larger one is streamed in its turn.
        chunk_bytes: the largest chunk a stream yields (what is reserved before each read).
    """

    workers: int = DEFAULT_WORKERS
    budget_bytes: int = 64 * MIB
    buffer_limit: int = 8 * MIB
    chunk_bytes: int = CHUNK_BYTES

    def __post_init__(self) -> None:
        if self.workers < 1 or self.chunk_bytes < 1:
            raise ValueError("workers and chunk_bytes must be at least 1")
        if self.budget_bytes < 0 or self.buffer_limit < 0:
            raise ValueError("budget_bytes and buffer_limit must not be negative")


@dataclass(eq=False)
class _Slot(Generic[T]):
    """One document between its GET and the writer."""

    index: int
    item: T
    ready: bool = False  # the worker is done with it: buffered, handed over, missing or failed
    missing: bool = False
    error: BaseException | None = None
    chunks: deque[bytes] = field(default_factory=deque)
    read: int = 0  # bytes the worker buffered for it (against ``buffer_limit``)
    rest: Iterator[bytes] | None = None  # its open stream, read by the writer in turn
    drain: Iterator[bytes] | None = None
    future: Future[None] | None = None


class ReadAhead(Generic[T]):
    """``(item, chunks or None)`` for every item, in order, fetched by a bounded pool.

    ``open_`` runs on a pool thread: it issues the GET and returns the chunks, or None when
    the object is gone. An exception it raises (or one raised while a chunk is read ahead) is
    raised by the iteration at that item's turn; ``items`` is only ever read by the iterating
    thread (a database cursor may be tied to it). The chunks of an item are valid until the
    next item is asked for. Leaving the ``with`` block cancels what is pending, joins the
    threads and closes every open stream.
    """

    def __init__(self, items: Iterable[T], open_: Callable[[T], Iterator[bytes] | None],
                 limits: FetchLimits | None = None) -> None:
        self._items = iter(items)
        self._open = open_
        self.limits = limits or FetchLimits()
        self._cond = threading.Condition()
        self._slots: dict[int, _Slot[T]] = {}
        self._pulled = 0  # items taken from ``items``
        self._exhausted = False
        self._source_error: Exception | None = None
        self._head = 0  # the item the writer waits for or reads
        self._closed = False
        self._buffered = 0
        self.high_water = 0
        """The most bytes ever buffered (reserved) at once: never above ``budget_bytes`` while
        chunks keep within ``chunk_bytes``."""
        self._pool: ThreadPoolExecutor | None = None

    @property
    def buffered(self) -> int:
        """Bytes buffered (or reserved for a chunk being read) right now."""
        with self._cond:
            return self._buffered

    def __enter__(self) -> ReadAhead[T]:
        self._pool = ThreadPoolExecutor(max_workers=self.limits.workers,
                                        thread_name_prefix="read-ahead")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading ahead: cancel, join the threads, close what is still open."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        slots = list(self._slots.values())
        for slot in slots:
            if slot.future is not None:
                slot.future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for slot in slots:
            self._retire(slot)
        self._slots.clear()

    def __iter__(self) -> Iterator[tuple[T, Iterator[bytes] | None]]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("ReadAhead is iterated inside its with block")
        index = 0
        while True:
            self._fill(pool, index)
            slot = self._slots.get(index)
            if slot is None:
                if self._source_error is not None:
                    raise self._source_error
                return
            with self._cond:
                self._head = index
                self._cond.notify_all()  # its worker may be waiting: it hands over at once
                while not (slot.ready or self._closed):
                    self._cond.wait()
            if not slot.ready:
                raise RuntimeError("ReadAhead was closed while it was iterated")
            if slot.error is not None:
                raise slot.error
            if not slot.missing:
                slot.drain = self._drain(slot)
            try:
                yield slot.item, slot.drain
            finally:
                self._retire(slot)
                self._slots.pop(index, None)
            index += 1

    def _fill(self, pool: ThreadPoolExecutor, head: int) -> None:
        """Take items and start their fetches, up to ``workers`` from ``head`` on."""
        while not self._exhausted and self._pulled < head + self.limits.workers:
            try:
                item = next(self._items)
            except StopIteration:
                self._exhausted = True
                return
            except Exception as err:  # noqa: BLE001 - raised at this item's turn, in order
                self._source_error, self._exhausted = err, True
                return
            slot = _Slot(self._pulled, item)
            self._slots[self._pulled] = slot
            self._pulled += 1
            slot.future = pool.submit(self._fetch, slot)

    def _fetch(self, slot: _Slot[T]) -> None:
        """On a pool thread: the GET, then chunks buffered while the limits allow."""
        try:
            stream = None if self._closed else self._open(slot.item)
        except BaseException as err:  # noqa: BLE001 - handed to the iterating thread
            self._settle(slot, error=err)
            return
        if stream is None:
            self._settle(slot, missing=True)
            return
        size = self.limits.chunk_bytes
        while True:
            with self._cond:
                step = self._next_step(slot, stream)
            if step == "handed":
                return
            if step == "stopped":
                _close(stream)
                return
            try:
                chunk = next(stream, None)
            except BaseException as err:  # noqa: BLE001 - handed to the iterating thread
                with self._cond:
                    self._account(-size)
                _close(stream)
                self._settle(slot, error=err)
                return
            with self._cond:
                self._account((0 if chunk is None else len(chunk)) - size)  # keep what it holds
                if chunk is None:
                    slot.ready = True
                    self._cond.notify_all()
                    return
                slot.chunks.append(chunk)
                slot.read += len(chunk)

    def _next_step(self, slot: _Slot[T], stream: Iterator[bytes]
                   ) -> Literal["read", "handed", "stopped"]:
        """With the lock held: wait until a chunk may be read (its room is then reserved), or
        hand the stream over (the writer waits for it, or it outgrew ``buffer_limit``)."""
        size, limits = self.limits.chunk_bytes, self.limits
        while not self._closed:
            if slot.index == self._head or slot.read + size > limits.buffer_limit:
                slot.rest, slot.ready = stream, True
                self._cond.notify_all()
                return "handed"
            if self._buffered + size <= limits.budget_bytes:
                self._account(size)
                return "read"
            self._cond.wait()
        slot.ready = True
        return "stopped"

    def _settle(self, slot: _Slot[T], *, error: BaseException | None = None,
                missing: bool = False) -> None:
        with self._cond:
            slot.error, slot.missing, slot.ready = error, missing, True
            self._cond.notify_all()

    def _drain(self, slot: _Slot[T]) -> Iterator[bytes]:
        """The buffered chunks (each released as it is handed on), then the open stream."""
        while True:
            with self._cond:
                if not slot.chunks:
                    break
                chunk = slot.chunks.popleft()
                self._account(-len(chunk))
            yield chunk
        if slot.rest is not None:
            yield from slot.rest

    def _retire(self, slot: _Slot[T]) -> None:
        """Close what the writer left of a document and release its buffer (idempotent)."""
        drain, rest, slot.drain, slot.rest = slot.drain, slot.rest, None, None
        _close(drain)
        _close(rest)
        with self._cond:
            self._account(-sum(len(c) for c in slot.chunks))
            slot.chunks.clear()

    def _account(self, delta: int) -> None:
        """Change the bytes buffered (the lock is held); wake workers waiting for room."""
        self._buffered += delta
        if delta > 0:
            self.high_water = max(self.high_water, self._buffered)
        else:
            self._cond.notify_all()


def _close(stream: Iterator[bytes] | None) -> None:
    """Close a stream that is a generator (``open_blob``'s closes its response body)."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()

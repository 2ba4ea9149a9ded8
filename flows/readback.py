"""A package's files read back in their order by one thread, a bounded distance ahead.

Verification reads every staged file once and streams it into the single-download archive.
Read on the archive's own thread, each GET's round trip and body transfer stop the deflating:
:class:`OrderedReadBack` issues the GETs on one thread of its own, strictly one after another
and in the files' order (the requests are the same, in the same order, as a plain loop's), and
hands the chunks over through a queue of at most ``ahead_chunks`` chunks, so the next files
arrive while the current one is deflated and memory stays bounded whatever the sizes.

The consumer checks each file itself (size and SHA-256): nothing is taken on trust from the
reading thread. An error of a read (a missing object, a dropped connection) is raised by the
consumer at that file's turn, with the class it had (a transient one stays retryable); leaving
the ``with`` block stops the thread, joins it and closes the stream it had open.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
AHEAD_CHUNKS = 16  # 1 MiB chunks (storage.backup_store.READ_CHUNK): at most 16 MiB ahead
_POLL_SECONDS = 0.1
_CHUNK, _END, _ERROR = "chunk", "end", "error"


class OrderedReadBack(Generic[T]):
    """``(item, chunks)`` for every item, in order; ``open_`` streams one item's bytes.

    Args:
        items: what to read, in order (package files).
        open_: called on the reading thread for each item in turn; returns its chunks (the
            GET is issued by the first one at the latest). A chunk should not exceed 1 MiB.
        ahead_chunks: chunks held between the reading thread and the consumer at most.
    """

    def __init__(self, items: Sequence[T], open_: Callable[[T], Iterator[bytes]],
                 ahead_chunks: int = AHEAD_CHUNKS) -> None:
        if ahead_chunks < 1:
            raise ValueError("ahead_chunks must be at least 1")
        self._items = list(items)
        self._open = open_
        self._queue: queue.Queue[tuple[str, int, object]] = queue.Queue(maxsize=ahead_chunks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="read-back", daemon=True)
        self._started = False

    def __enter__(self) -> OrderedReadBack[T]:
        self._thread.start()
        self._started = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading: the thread closes its stream and ends; whatever it queued is dropped."""
        self._stop.set()
        if self._started:
            while self._thread.is_alive():
                self._drop_queued()
                self._thread.join(_POLL_SECONDS)
        self._drop_queued()

    def __iter__(self) -> Iterator[tuple[T, Iterator[bytes]]]:
        if not self._started:
            raise RuntimeError("OrderedReadBack is iterated inside its with block")
        for index, item in enumerate(self._items):
            yield item, self._chunks(index)

    def _chunks(self, index: int) -> Iterator[bytes]:
        """Item ``index``'s chunks (the previous item's must all have been taken)."""
        while True:
            kind, at, value = self._queue.get()
            if kind == _ERROR:
                self._stop.set()
                raise value  # type: ignore[misc]  # always a BaseException (see _read)
            if at != index:
                self._stop.set()
                raise RuntimeError(f"read-back out of step: item {at} while {index} was read")
            if kind == _END:
                return
            yield value  # type: ignore[misc]  # bytes (see _read)

    def _read(self) -> None:
        """On the reading thread: every item's chunks, in order, then its end marker."""
        try:
            for index, item in enumerate(self._items):
                stream = self._open(item)
                try:
                    for chunk in stream:
                        if not self._put((_CHUNK, index, chunk)):
                            return
                finally:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
                if not self._put((_END, index, None)):
                    return
        except BaseException as err:  # noqa: BLE001 - raised by the consumer at its turn
            self._put((_ERROR, -1, err))

    def _put(self, entry: tuple[str, int, object]) -> bool:
        """Queue an entry, waiting for room; False once the consumer stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _drop_queued(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

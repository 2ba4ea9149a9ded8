"""Small objects' PUTs sent by a bounded pool while the writer goes on with the next file.

An export writes some forty objects, most of them one PUT each (``storage.objects``: up to
one part, buffered). Sent inline, every one stops the writer for a round trip and the body's
transfer; handed to an :class:`UploadQueue` they overlap the next table's reading and writing.
At most ``workers`` PUTs run and at most ``pending`` bodies wait, and together they hold at
most ``budget`` bytes (a body larger than that waits until it is alone), so memory stays
bounded whatever the package's size; ``submit`` blocks while the queue is full.

Nothing is verified before it is stored: the caller leaves the ``with`` block (which waits for
every PUT) before it reads anything back, and a failed PUT is raised there, the first one
(with its class: a transient failure stays retryable). When the block itself raised, every
PUT still running is waited for (none lands after the caller's cleanup) and that error wins.

A large object (the single-download archive) is a multipart upload whose parts leave from
inside ``write``: a :class:`BackgroundSink` in front of it lets the writer go on deflating
while a part is hashed and sent.
"""

from __future__ import annotations

import collections
import io
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

DEFAULT_WORKERS = 4
DEFAULT_PENDING = 4  # bodies waiting for a worker, beyond those being sent
# Bytes of bodies queued or being sent: four parts' worth (storage.objects.PART_BYTES). Eight
# bodies of up to one part each (then 16 MiB) added up to 30-50 MiB of an export's peak RSS;
# most files are a few MiB.
DEFAULT_BUDGET = 32 * 1024 * 1024
SINK_AHEAD_BYTES = 8 * 1024 * 1024  # a BackgroundSink's blocks waiting for the upload


class UploadQueue:
    """Runs ``send`` callables (one PUT each) on a bounded pool; ``wait`` raises the first
    failure. Use it as a context manager: leaving the block waits for every PUT."""

    def __init__(self, workers: int = DEFAULT_WORKERS, pending: int = DEFAULT_PENDING,
                 budget: int = DEFAULT_BUDGET) -> None:
        if workers < 1 or pending < 0 or budget < 1:
            raise ValueError("workers and budget must be at least 1 and pending not negative")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self._room = threading.BoundedSemaphore(workers + pending)
        self._budget, self._held = budget, 0
        self._bytes = threading.Condition()
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()
        self._failed = threading.Event()

    def submit(self, send: Callable[[], None], size: int = 0) -> None:
        """Queue one PUT of a ``size``-byte body (waits while the queue is full, in number
        or in bytes); raises at once the failure of an earlier one, so a writer stops early."""
        self._raise_failure()
        self._room.acquire()
        with self._bytes:
            self._bytes.wait_for(lambda: self._held == 0 or self._held + size <= self._budget)
            self._held += size
        try:
            future = self._pool.submit(send)
        except BaseException:
            self._release(size)
            raise
        future.add_done_callback(lambda done: self._done(done, size))
        with self._lock:
            self._futures.append(future)

    def wait(self) -> None:
        """Wait for every PUT; raise the first failure (in the order they were submitted)."""
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.exception()  # waits
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def __enter__(self) -> UploadQueue:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is None:
                self.wait()
            else:  # the block's own error wins; its PUTs still end before the cleanup
                for future in list(self._futures):
                    future.exception()
        finally:
            self._pool.shutdown(wait=True)

    def _release(self, size: int) -> None:
        with self._bytes:
            self._held -= size
            self._bytes.notify_all()
        self._room.release()

    def _done(self, future: Future[None], size: int) -> None:
        self._release(size)
        if not future.cancelled() and future.exception() is not None:
            self._failed.set()

    def _raise_failure(self) -> None:
        if self._failed.is_set():
            self.wait()


class BackgroundSink(io.RawIOBase):
    """A write-only sink whose bytes a thread of its own passes on to ``target`` (an upload:
    hashing, multipart parts), so the writer goes on while a part is sent.

    At most ``ahead_bytes`` wait between the two, the block being passed on included (a
    larger block waits until it is alone): bounded in bytes, not in writes, since a writer's
    blocks range from a few bytes to a whole read-back chunk (64 blocks of 1 MiB were 64 MiB).
    A failure of ``target`` is raised by the next ``write`` or by ``finish``; ``finish`` waits
    until everything reached ``target``, ``abort`` drops what waits. Use it as a context
    manager inside the upload's ``with`` block: leaving without an error finishes, with one
    aborts, and the thread has ended either way before the upload is completed or discarded.
    """

    def __init__(self, target: Any, ahead_bytes: int = SINK_AHEAD_BYTES) -> None:
        super().__init__()
        if ahead_bytes < 1:
            raise ValueError("ahead_bytes must be at least 1")
        self._target = target
        self._budget, self._held = ahead_bytes, 0
        self._blocks: collections.deque[bytes | None] = collections.deque()
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._pass_on, name="upload-writer",
                                        daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._raise_failure()
        block = bytes(data)  # the caller may reuse its buffer
        with self._changed:
            self._changed.wait_for(lambda: self._stopped or self._held == 0
                                   or self._held + len(block) <= self._budget)
            if not self._stopped:
                self._blocks.append(block)
                self._held += len(block)
                self._changed.notify_all()
                return len(block)
        self._raise_failure()
        raise ValueError("write to a finished or aborted BackgroundSink")

    @property
    def held(self) -> int:
        """Bytes written and not yet passed on (the block being passed on included)."""
        return self._held

    def finish(self) -> None:
        """Wait until every byte reached the target; raise its failure, if any."""
        with self._changed:
            if not self._stopped:
                self._blocks.append(None)
                self._changed.notify_all()
        self._thread.join()
        self._raise_failure()

    def abort(self) -> None:
        """Drop what waits and end the thread (the upload's owner discards the upload)."""
        with self._changed:
            self._stopped = True
            self._blocks.clear()
            self._changed.notify_all()
        self._thread.join()

    def __enter__(self) -> BackgroundSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.finish()
        else:
            self.abort()

    def _pass_on(self) -> None:
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self._stopped or bool(self._blocks))
                    if self._stopped:
                        return
                    block = self._blocks.popleft()
                if block is None:
                    return
                self._target.write(block)
                with self._changed:
                    self._held -= len(block)
                    self._changed.notify_all()
        except BaseException as err:  # noqa: BLE001 - raised in the writer's thread
            self._error = err
        finally:
            with self._changed:
                self._stopped = True
                self._blocks.clear()
                self._changed.notify_all()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

"""Small objects' PUTs sent by a bounded pool while the writer goes on with the next file.

An export writes some forty objects, most of them one PUT each (``storage.objects``: up to
one part, buffered). Sent inline, every one stops the writer for a round trip and the body's
transfer; handed to an :class:`UploadQueue` they overlap the next table's reading and writing.
At most ``workers`` PUTs run and at most ``pending`` bodies wait (each up to one part), so
memory stays bounded whatever the package's size; ``submit`` blocks while the queue is full.

Nothing is verified before it is stored: the caller leaves the ``with`` block (which waits for
every PUT) before it reads anything back, and a failed PUT is raised there, the first one
(with its class: a transient failure stays retryable). When the block itself raised, every
PUT still running is waited for (none lands after the caller's cleanup) and that error wins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

DEFAULT_WORKERS = 4
DEFAULT_PENDING = 4  # bodies waiting for a worker, beyond those being sent


class UploadQueue:
    """Runs ``send`` callables (one PUT each) on a bounded pool; ``wait`` raises the first
    failure. Use it as a context manager: leaving the block waits for every PUT."""

    def __init__(self, workers: int = DEFAULT_WORKERS, pending: int = DEFAULT_PENDING) -> None:
        if workers < 1 or pending < 0:
            raise ValueError("workers must be at least 1 and pending not negative")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self._room = threading.BoundedSemaphore(workers + pending)
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()
        self._failed = threading.Event()

    def submit(self, send: Callable[[], None]) -> None:
        """Queue one PUT (waits while the queue is full); raises at once the failure of an
        earlier one, so a writer stops early."""
        self._raise_failure()
        self._room.acquire()
        try:
            future = self._pool.submit(send)
        except BaseException:
            self._room.release()
            raise
        future.add_done_callback(self._done)
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

    def _done(self, future: Future[None]) -> None:
        self._room.release()
        if not future.cancelled() and future.exception() is not None:
            self._failed.set()

    def _raise_failure(self) -> None:
        if self._failed.is_set():
            self.wait()

"""Bounded concurrency for backup transfers: jobs in flight, and bytes held in memory.

``run_bounded`` keeps at most a fixed number of jobs queued or running, so a million documents
never become a million futures. ``BUFFERS`` bounds the memory the jobs hold: a small blob is
sealed in memory, a large one holds a multipart part buffer, and sixteen workers per tenant,
four tenants at a time, could otherwise hold a gigabyte. The budget is per process (the nightly
run backs up several tenants in one process), and a job reserves before its first byte is read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
BUFFER_BUDGET_BYTES = 128 * 1024 * 1024


class ByteBudget:
    """A counting semaphore in bytes; a reservation larger than the whole budget takes it all."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._ready = threading.Condition()
        self.peak = 0  # the most ever reserved at once, for tests and the bench

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Hold ``size`` bytes of the budget for the duration of the block."""
        size = max(0, min(size, self.total))
        with self._ready:
            self._ready.wait_for(lambda: self._free >= size)
            self._free -= size
            self.peak = max(self.peak, self.total - self._free)
        try:
            yield
        finally:
            with self._ready:
                self._free += size
                self._ready.notify_all()


BUFFERS = ByteBudget(BUFFER_BUDGET_BYTES)


def run_bounded(pool: ThreadPoolExecutor, work: Iterable[Callable[[], T] | T],
                on_done: Callable[[T], None], limit: int) -> None:
    """Run the callables of ``work`` on ``pool``, at most ``limit`` in flight; other items are
    results ready without a job, applied in turn. The first failure cancels what has not
    started and is raised once the running jobs end (the pool's ``with`` block waits)."""
    pending: set[Future[T]] = set()
    try:
        for item in work:
            if not callable(item):
                on_done(item)
                continue
            pending.add(pool.submit(item))
            if len(pending) >= limit:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_done(future.result())
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_done(future.result())
    except BaseException:
        for future in pending:
            future.cancel()
        raise

"""Progress of a long run at a glance in the Prefect UI.

One progress artifact (the bar) and one markdown summary (tables written, documents packed,
bytes, elapsed and estimated time left), created when the block starts and updated in place,
at most every few seconds: 100,000 documents must not cost 100,000 API calls. Outside a flow
run nothing is published, so plain code and tests use it freely; a failed update is logged
once and never fails the run.

    with Progress(total_steps=len(tables) + len(documents), title=f"Export of {tenant}") as p:
        p.advance(tables=1, nbytes=written)        # one table written
        p.advance(documents=1, nbytes=size)        # one document packed (any thread)
        p.doing("verifying every object")          # a stage without its own steps
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.context import FlowRunContext

log = logging.getLogger(__name__)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")


def md_text(text: object, limit: int = 400) -> str:
    """``text`` as one line of markdown that renders as typed (messages may quote input)."""
    line = " ".join(str(text).split())
    return _MARKDOWN.sub(r"\\\1", line if len(line) <= limit else f"{line[:limit]}...")


def span(seconds: float) -> str:
    """A duration for people: ``45 s``, ``3 min 05 s``, ``2 h 10 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def size(nbytes: int) -> str:
    """Bytes for people, binary units."""
    amount = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{nbytes} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - the loop returns at GiB


@dataclass(frozen=True)
class Counts:
    """What a run has done so far."""

    steps: int = 0
    tables: int = 0
    documents: int = 0
    bytes: int = 0


class Progress:
    """Steps done out of ``total_steps``, published to the current flow run.

    Args:
        total_steps: the units of work the percentage and the estimate count (tables plus
            documents, say); :meth:`add_steps` raises it when more work is discovered.
        title: the summary's heading ("Export of tenant t-42").
        key: artifact key of the bar (the summary gets ``<key>-summary``); with a key both
            show on the Artifacts page, without one only on the run's page.
        every_seconds: the least time between two updates (the last one is always sent).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, total_steps: int, *, title: str = "Progress", key: str | None = None,
                 every_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.total = max(0, total_steps)
        self.title, self.key, self.every = title, key, every_seconds
        self._clock = clock
        self._counts = Counts()
        self._state: Literal["running", "done", "stopped"] = "running"
        self._stopped_by = ""
        self._now = ""
        self._lock = threading.Lock()
        self._publishing = threading.Lock()
        self._started = self._last_sent = clock()
        self._context: contextvars.Context | None = None
        self._ids: tuple[UUID, UUID] | None = None
        self._later: threading.Timer | None = None

    def __enter__(self) -> Progress:
        self._started = self._clock()
        if FlowRunContext.get() is not None:  # else: plain code, nothing to publish to
            self._context = contextvars.copy_context()  # threads publish in the run's context
            self._send(create=True, wait=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._state = "done" if exc is None else "stopped"
            self._stopped_by = "" if exc is None else type(exc).__name__
            later, self._later = self._later, None
        if later is not None:
            later.cancel()
        self._send(wait=True)  # the last word, whatever another thread is sending

    @property
    def counts(self) -> Counts:
        """A snapshot of the counters."""
        with self._lock:
            return self._counts

    def add_steps(self, steps: int) -> None:
        """More work than announced (documents found while listing)."""
        with self._lock:
            self.total += max(0, steps)

    def doing(self, what: str) -> None:
        """What the run does now ("verifying every object"), shown until the next call.

        Throttled like :meth:`advance`: within ``every_seconds`` of the last update the text
        is published when they have passed (once, with whatever the run does by then), so a
        call per tenant of 1,000 is not 1,000 updates, and a stage that starts just after an
        update is still shown while it lasts."""
        with self._lock:
            self._now = what
            wait = self.every - (self._clock() - self._last_sent)
            if wait > 0:
                if self._later is None and self._context is not None and \
                        self._state == "running":
                    self._later = threading.Timer(wait, self._send_later)
                    self._later.daemon = True
                    self._later.start()
                return
        self._send()

    def _send_later(self) -> None:
        with self._lock:
            self._later = None
        self._send()

    def advance(self, steps: int = 1, *, tables: int = 0, documents: int = 0,
                nbytes: int = 0) -> None:
        """Count work done (from any thread); publishes when ``every_seconds`` have passed."""
        with self._lock:
            counts = self._counts
            self._counts = replace(counts, steps=counts.steps + steps,
                                   tables=counts.tables + tables,
                                   documents=counts.documents + documents,
                                   bytes=counts.bytes + nbytes)
            due = self._clock() - self._last_sent >= self.every
        if due:
            self._send()

    def percent(self) -> float:
        """0 to 100; 100 once the block ended without an error."""
        with self._lock:
            if self._state == "done":
                return 100.0
            if self.total == 0:
                return 0.0
            return min(100.0, 100.0 * self._counts.steps / self.total)

    def remaining_seconds(self) -> float | None:
        """Time left at the pace so far; ``None`` before the first step or once ended."""
        with self._lock:
            done, total, state = self._counts.steps, self.total, self._state
        if state != "running" or done <= 0:
            return None
        return max(0.0, (self._clock() - self._started) * (total - done) / done)

    def line(self) -> str:
        """One line: what is done and what is left (the bar's description, a log line)."""
        with self._lock:
            counts, now = self._counts, self._now
        left = self.remaining_seconds()
        parts = [f"{counts.tables} tables", f"{counts.documents} documents", size(counts.bytes)]
        tail = f"; about {span(left)} left" if left is not None else ""
        return (f"{now}: " if now else "") + ", ".join(parts) + tail

    def markdown(self) -> str:
        """The summary as shown in the UI."""
        with self._lock:
            counts, total, state, by = self._counts, self.total, self._state, self._stopped_by
            now = self._now if state == "running" else ""
        left = self.remaining_seconds()
        status = {"running": f"{self.percent():.0f} %", "done": "done",
                  "stopped": f"stopped at {self.percent():.0f} % ({md_text(by)})"}[state]
        rows = [("steps", f"{counts.steps} of {total}"), ("tables written", str(counts.tables)),
                ("documents packed", str(counts.documents)), ("bytes", size(counts.bytes)),
                ("elapsed", span(self._clock() - self._started)),
                ("estimated time left", span(left) if left is not None else "-")]
        if now:
            rows.insert(0, ("now", md_text(now)))
        table = "\n".join(f"| {name} | {value} |" for name, value in rows)
        return f"### {md_text(self.title)}: {status}\n\n| | |\n|---|---|\n{table}"

    def _send(self, *, create: bool = False, wait: bool = False) -> None:
        """Publish (one thread at a time; unless ``wait``, a caller that finds it busy skips)."""
        if self._context is None or not self._publishing.acquire(blocking=wait):
            return
        try:
            with self._lock:
                self._last_sent = self._clock()
            self._context.copy().run(self._create if create else self._update)
        except Exception as err:  # noqa: BLE001 - progress must never fail the run
            log.warning("progress of %r not published (%s); the run goes on", self.title, err)
            self._context = None  # once: no retry storm against a struggling API
        finally:
            self._publishing.release()

    def _create(self) -> None:
        bar = create_progress_artifact(self.percent(), key=self.key, description=self.line())
        summary = create_markdown_artifact(
            self.markdown(), key=f"{self.key}-summary" if self.key else None,
            description=f"{self.title}: tables written, documents packed, bytes, time left")
        self._ids = (cast(UUID, bar), cast(UUID, summary))  # sync calls inside a flow run

    def _update(self) -> None:
        if self._ids is None:
            return
        bar, summary = self._ids
        update_progress_artifact(bar, self.percent(), description=self.line())
        with get_client(sync_client=True) as client:
            client.update_artifact(summary, ArtifactUpdate(data=self.markdown()))

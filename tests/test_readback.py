"""flows.readback: the package's files come back whole and in order, read by one thread one
after another, a bounded distance ahead; a read's error is raised at its file's turn with its
class, and leaving early stops the thread and closes the stream it had open."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from flows.readback import OrderedReadBack
from kernel.errors import TransientStorageError

FILES = {f"data/t{i}.csv": [bytes([i]) * (100 + j) for j in range(i % 4)] for i in range(12)}


class Source:
    """Streams of FILES, recording which were opened, on which thread, and which closed."""

    def __init__(self, fail_at: str | None = None,
                 files: dict[str, list[bytes]] | None = None) -> None:
        self.files = FILES if files is None else files
        self.opened: list[str] = []
        self.threads: set[str] = set()
        self.closed: list[str] = []
        self.produced = 0
        self.fail_at = fail_at

    def open(self, path: str) -> Iterator[bytes]:
        self.opened.append(path)
        self.threads.add(threading.current_thread().name)
        if path == self.fail_at:
            raise TransientStorageError(f"reading {path!r}: SlowDown", tenant_id="t-1")
        return self._stream(path)

    def _stream(self, path: str) -> Iterator[bytes]:
        try:
            for chunk in self.files[path]:
                self.produced += 1
                yield chunk
        finally:
            self.closed.append(path)


def test_every_file_comes_back_whole_in_order_from_one_thread() -> None:
    source = Source()
    with OrderedReadBack(list(FILES), source.open) as fetched:
        got = {path: b"".join(chunks) for path, chunks in fetched}
    assert list(got) == list(FILES)
    assert got == {path: b"".join(chunks) for path, chunks in FILES.items()}
    assert source.opened == list(FILES)  # each once, in the files' order
    assert source.closed == list(FILES)
    assert source.threads == {"read-back"}


def test_reading_stays_a_bounded_distance_ahead() -> None:
    many = {f"f{i}": [b"x"] * 50 for i in range(4)}
    source = Source(files=many)
    taken = 0
    with OrderedReadBack(list(many), source.open, ahead_chunks=5) as fetched:
        for _path, chunks in fetched:
            for _chunk in chunks:
                taken += 1
                time.sleep(0.001)
                assert source.produced - taken <= 5 + 1  # the queue, and one in its hand
    assert taken == 200


def test_an_error_is_raised_at_its_files_turn_with_its_class() -> None:
    paths = list(FILES)
    source = Source(fail_at=paths[5])
    seen: list[tuple[str, bytes]] = []

    def read_all() -> None:
        with OrderedReadBack(paths, source.open) as fetched:
            for path, chunks in fetched:
                seen.append((path, b"".join(chunks)))

    with pytest.raises(TransientStorageError, match="SlowDown") as failure:
        read_all()
    assert failure.value.tenant_id == "t-1"
    assert [p for p, _ in seen] == paths[:5]  # every file before it, whole
    assert source.opened == paths[:6]  # nothing after the failing read was requested


def test_leaving_early_stops_the_thread_and_closes_its_stream() -> None:
    files = {"big": [b"y"] * 1000, "next": [b"z"]}
    source = Source(files=files)
    reader = OrderedReadBack(list(files), source.open, ahead_chunks=2)
    with reader as fetched:
        for _path, chunks in fetched:
            next(chunks)
            break
    assert not reader._thread.is_alive()
    assert source.opened == ["big"] and source.closed == ["big"]
    assert source.produced < 10


def test_iterating_outside_the_with_block_is_refused() -> None:
    with pytest.raises(RuntimeError, match="with block"):
        next(iter(OrderedReadBack(["a"], Source().open)))

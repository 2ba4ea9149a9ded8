"""storage.upload_queue and ``objects.upload(queue=...)``: PUTs overlap but stay bounded, each
one has ended before the queue's block is left, the first failure is raised with its class,
and an object sent through the queue is byte for byte the one written inline."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from kernel.errors import StorageError, TransientStorageError
from storage import objects
from storage.upload_queue import BackgroundSink, UploadQueue
from tests.conftest import s3_client


class Sends:
    """PUT stand-ins that take ``seconds`` each, counting how many run and wait at once."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = self.most_running = self.ended = 0

    def send(self, fail: BaseException | None = None) -> Any:
        def put() -> None:
            with self.lock:
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            time.sleep(self.seconds)
            with self.lock:
                self.running -= 1
                self.ended += 1
            if fail is not None:
                raise fail
        return put


def test_puts_overlap_up_to_the_workers_and_all_end_inside_the_block() -> None:
    sends = Sends(0.1)
    with UploadQueue(workers=4, pending=2) as queue:
        for _ in range(8):
            queue.submit(sends.send())
    assert sends.ended == 8  # every PUT ended before the block was left
    assert sends.most_running == 4  # they overlapped, four at a time


def test_submit_waits_while_the_queue_is_full() -> None:
    sends = Sends(0.05)
    outstanding: list[int] = []
    with UploadQueue(workers=2, pending=1) as queue:
        for _ in range(10):
            queue.submit(sends.send())
            with sends.lock:
                outstanding.append(len(queue._futures) - sends.ended)
    assert max(outstanding) <= 3  # 2 sending + 1 waiting: bodies held at once stay bounded


def test_bodies_queued_and_sent_stay_within_the_byte_budget() -> None:
    """Each PUT sees the bytes its queue holds (bodies queued or being sent, its own
    included): never more than the budget, but for a larger body, which is sent alone."""
    seen: list[tuple[int, int]] = []
    sizes = [30, 30, 30, 30, 60, 250, 10, 10, 90, 5] * 3

    with UploadQueue(workers=4, pending=4, budget=100) as queue:
        def body(size: int) -> Any:
            def put() -> None:
                with queue._bytes:
                    seen.append((size, queue._held))
                time.sleep(0.01)
            return put

        for size in sizes:
            queue.submit(body(size), size=size)
    assert len(seen) == len(sizes) and queue._held == 0
    assert all(held == size if size > 100 else size <= held <= 100 for size, held in seen), seen
    assert max(held for size, held in seen if size <= 100) > 60  # small ones did overlap


def test_the_first_failure_is_raised_with_its_class_after_every_put_ended() -> None:
    sends = Sends(0.02)

    def writer() -> None:
        with UploadQueue(workers=3) as queue:
            queue.submit(sends.send())
            queue.submit(sends.send(TransientStorageError("first", tenant_id="t-1")))
            queue.submit(sends.send(StorageError("second", tenant_id="t-1")))

    with pytest.raises(TransientStorageError, match="first") as failure:
        writer()
    assert failure.value.tenant_id == "t-1"
    assert sends.ended == 3


def test_a_later_submit_raises_an_earlier_failure() -> None:
    sends = Sends(0.0)
    queue = UploadQueue(workers=1)
    with queue:
        queue.submit(sends.send(StorageError("PUT of data/a.csv failed", tenant_id="t-1")))
        time.sleep(0.1)
        with pytest.raises(StorageError, match=r"data/a\.csv"):
            queue.submit(sends.send())
        with pytest.raises(StorageError, match=r"data/a\.csv"):
            queue.wait()
        queue._futures.clear()  # seen: leave the block cleanly


def test_the_blocks_own_error_wins_and_its_puts_still_end() -> None:
    sends = Sends(0.1)

    def writer() -> None:
        with UploadQueue(workers=2) as queue:
            queue.submit(sends.send(StorageError("upload failed too")))
            queue.submit(sends.send())
            raise RuntimeError("exporter broke")

    with pytest.raises(RuntimeError, match="exporter broke"):
        writer()
    assert sends.ended == 2  # nothing lands after the caller's cleanup


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    client = s3_client(moto_endpoint)
    bucket = f"queue-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def test_objects_sent_through_the_queue_are_the_bytes_written(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    bodies = {f"data/t{i}.csv": (f"id,name\n{i},member {i}\n" * (i * 500)).encode()
              for i in range(12)}
    big = bytes(range(256)) * (objects.PART_BYTES // 256 + 5)  # more than one part: inline
    written: list[objects.StoredObject] = []
    with UploadQueue(workers=4) as queue:
        for key, body in [*bodies.items(), ("data/big.bin", big)]:
            with objects.upload(client, bucket, key, content_type="text/csv; charset=utf-8",
                                queue=queue, written=written) as sink:
                sink.write(body)
    for stored in written:
        objects.verify(client, bucket, stored)
    for key, body in [*bodies.items(), ("data/big.bin", big)]:
        got = client.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body
    assert client.head_object(Bucket=bucket, Key="data/t3.csv")["ContentType"] == (
        "text/csv; charset=utf-8")


def test_a_failed_put_through_the_queue_is_a_storage_error(s3: tuple[Any, str]) -> None:
    client, _ = s3

    def writer() -> None:
        with UploadQueue(workers=2) as queue, objects.upload(
                client, "no-such-bucket", "k.csv", queue=queue, tenant_id="t-1") as sink:
            sink.write(b"id\n1\n")

    with pytest.raises(StorageError, match="no-such-bucket") as failure:
        writer()
    assert failure.value.tenant_id == "t-1"


class SlowTarget:
    """An upload stand-in: takes ``seconds`` per write, may fail at the ``fail_at``-th, and
    once ``gate`` is given waits for it before each write."""

    def __init__(self, seconds: float = 0.0, fail_at: int | None = None,
                 gate: threading.Event | None = None) -> None:
        self.seconds, self.fail_at, self.gate = seconds, fail_at, gate
        self.got: list[bytes] = []

    def write(self, data: bytes) -> int:
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail_at is not None and len(self.got) == self.fail_at:
            raise TransientStorageError("uploading part 3: SlowDown", tenant_id="t-1")
        time.sleep(self.seconds)
        self.got.append(bytes(data))
        return len(data)


def test_background_sink_passes_every_byte_on_in_order_while_the_writer_goes_on() -> None:
    gate = threading.Event()
    target = SlowTarget(gate=gate)  # the upload is stuck until the writer has written all
    blocks = [bytes([i]) * (1000 + i) for i in range(20)]
    with BackgroundSink(target, ahead_bytes=sum(map(len, blocks))) as sink:
        for block in blocks:
            sink.write(block)  # none of these waits for the target
        assert target.got == [] and sink.held == sum(map(len, blocks))
        gate.set()
    assert target.got == blocks  # finished: everything arrived, in order


def test_background_sink_bounds_what_waits_in_bytes() -> None:
    target = SlowTarget(seconds=0.002)
    sizes = [1, 700, 3, 1000, 250, 999, 5, 1000] * 5
    budget = 1000
    waiting = []
    with BackgroundSink(target, ahead_bytes=budget) as sink:
        for size in sizes:
            sink.write(b"x" * size)
            waiting.append(sink.held)
    assert max(waiting) <= budget and max(waiting) >= 999  # bytes, whatever the block count
    assert b"".join(target.got) == b"".join(b"x" * size for size in sizes)


def test_background_sink_takes_a_block_larger_than_its_budget_once_alone() -> None:
    target = SlowTarget(seconds=0.002)
    with BackgroundSink(target, ahead_bytes=10) as sink:
        for size in (4, 50, 4, 50):
            sink.write(b"y" * size)
            assert sink.held <= max(size, 10)
    assert [len(block) for block in target.got] == [4, 50, 4, 50]


def test_background_sink_raises_the_targets_failure_with_its_class() -> None:
    target = SlowTarget(fail_at=3)

    def writer() -> None:
        with BackgroundSink(target, ahead_bytes=8) as sink:
            for _ in range(100):
                sink.write(b"part")

    with pytest.raises(TransientStorageError, match="SlowDown") as failure:
        writer()
    assert failure.value.tenant_id == "t-1"
    assert len(target.got) == 3


def test_background_sink_aborted_passes_nothing_more_on() -> None:
    target = SlowTarget(seconds=0.05)
    sink = BackgroundSink(target, ahead_bytes=10)

    def writer() -> None:
        with sink:
            for _ in range(10):
                sink.write(b"z")
            raise RuntimeError("exporter broke")

    with pytest.raises(RuntimeError, match="exporter broke"):
        writer()
    arrived = len(target.got)
    assert arrived < 10 and not sink._thread.is_alive()
    time.sleep(0.1)
    assert len(target.got) == arrived

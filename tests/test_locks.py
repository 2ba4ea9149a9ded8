"""The tenant lock (issue 8): a holder that died is taken over at once, a live one never is.

A holder is killed with ``os._exit`` in a child process while it holds the lock, so its lease
stays granted on the Prefect server; the next acquisition must not wait for the lease to run
out. Takeover needs proof of death, so every kind of holder that cannot be proven dead (a live
process, one on another machine, in another PID namespace, after a reboot) keeps its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse

from flows import locks
from flows.locks import lock_name, proven_dead, tenant_lock, this_process
from kernel.errors import TenantBusy, TerminalError, TransientError
from storage.registry import LockHolder, LockHolders

ROOT = Path(__file__).resolve().parent.parent
TENANT = "lock-t"

HOLDER = textwrap.dedent("""
    import os
    import sys

    from flows.locks import tenant_lock

    with tenant_lock(sys.argv[1], 30):
        print("held", os.getpid(), flush=True)
        if sys.argv[2] == "die":
            os._exit(137)  # no finally, no release: the lease stays granted
        sys.stdin.read()  # live until the test closes stdin
        print("releasing", flush=True)
""")


@pytest.fixture
def control_url(prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TENANT_EXPORT_STATE_DIR", str(tmp_path / "state"))
    return f"sqlite:///{tmp_path / 'state' / 'control.sqlite'}"


def child_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return os.environ | {"PYTHONPATH": str(ROOT), "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def start_holder(tenant: str, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, tenant, mode], env=child_env(),
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()  # blocks until the child holds the lock (or dies)
    assert line.startswith("held"), (line, child.stderr.read() if child.stderr else "")
    return child


def lease_alive(lease_id: UUID) -> bool:
    """Renew the lease: 204 while it is granted, 410 once released or expired."""
    with get_client(sync_client=True) as client:
        try:
            client.renew_concurrency_lease(lease_id=lease_id, lease_duration=locks.LEASE_SECONDS)
        except httpx.HTTPStatusError as err:
            status = err.response.status_code
        else:
            return True
    assert status == locks.GONE
    return False


def test_a_killed_holder_is_taken_over_without_waiting(control_url: str) -> None:
    child = start_holder(TENANT, "die")
    assert child.wait(timeout=60) == 137
    with LockHolders(control_url) as holders:
        dead = holders.holder(lock_name(TENANT))
    assert dead is not None and dead.pid == child.pid
    with tenant_lock(TENANT, wait_seconds=0) as held:  # no wait at all: one try, takeover
        held.check()
        assert not lease_alive(UUID(dead.lease_id))  # the dead lease was released
        with LockHolders(control_url) as holders:
            mine = holders.holder(lock_name(TENANT))
        assert mine is not None and mine.pid == os.getpid()
        assert mine.lease_id == str(held.lease_id)
    with LockHolders(control_url) as holders:
        assert holders.holder(lock_name(TENANT)) is None  # released and forgotten
    with tenant_lock(TENANT, wait_seconds=0):
        pass


def test_a_live_holder_in_another_process_is_never_taken_over(control_url: str) -> None:
    child = start_holder(TENANT + "-live", "live")
    try:
        with (pytest.raises(TenantBusy, match=rf"pid {child.pid} on host"),
              tenant_lock(TENANT + "-live", wait_seconds=1)):
            pass
    finally:
        assert child.stdin is not None
        child.stdin.close()  # the holder finishes and releases
        assert child.wait(timeout=60) == 0
    with tenant_lock(TENANT + "-live", wait_seconds=30) as held:
        held.check()


def test_a_live_holder_in_this_process_is_never_taken_over(control_url: str) -> None:
    with tenant_lock(TENANT + "-self", wait_seconds=5) as first:
        outcome: list[BaseException] = []

        def second() -> None:
            try:
                with tenant_lock(TENANT + "-self", wait_seconds=1):
                    pass
            except BaseException as err:  # noqa: BLE001 - handed to the test thread
                outcome.append(err)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], TenantBusy)
        first.check()  # still ours
        assert lease_alive(first.lease_id)


# -- every kind of record: only proof of death releases a lease -------------------------------


def _reaped_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def zombie() -> Iterator[int]:
    """A child that exited and was not reaped yet: dead, but its PID still exists."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
    yield child.pid
    child.wait()


def me() -> LockHolder:
    return this_process("")


Fabricate = Callable[[LockHolder], LockHolder]

DEAD: list[tuple[str, Fabricate]] = [
    ("pid-gone", lambda h: dataclasses.replace(h, pid=_reaped_pid())),
    ("pid-reused", lambda h: dataclasses.replace(h, process_start=str(int(h.process_start) - 1))),
]
ALIVE: list[tuple[str, Fabricate]] = [
    ("this-process", lambda h: h),
    ("parent-process", lambda h: dataclasses.replace(
        h, pid=os.getppid(), process_start=locks._process_stat(os.getppid())[1]  # type: ignore[index]
    )),
    ("other-host", lambda h: dataclasses.replace(h, host=h.host + "-elsewhere",
                                                 pid=_reaped_pid())),
    ("other-boot", lambda h: dataclasses.replace(h, boot_id="0" * 36, pid=_reaped_pid())),
    ("other-pid-namespace", lambda h: dataclasses.replace(h, pid_namespace="1:1",
                                                          pid=_reaped_pid())),
    ("no-start-time", lambda h: dataclasses.replace(h, process_start="", pid=_reaped_pid())),
]


def grant_foreign_lease(name: str) -> UUID:
    """A lease taken straight from the server, as another holder would."""
    with get_client(sync_client=True) as client:
        response = client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=locks.LEASE_SECONDS)
    return ConcurrencyLimitWithLeaseResponse.model_validate(response.json()).lease_id


def record(control_url: str, name: str, holder: LockHolder) -> None:
    with LockHolders(control_url) as holders:
        holders.claim(name, holder)


@pytest.mark.parametrize(("kind", "fabricate"), [pytest.param(k, f, id=k) for k, f in DEAD])
def test_a_holder_proven_dead_is_taken_over(control_url: str, kind: str,
                                            fabricate: Fabricate) -> None:
    tenant = f"{TENANT}-{kind}"
    name = lock_name(tenant)
    with tenant_lock(tenant, wait_seconds=5):  # creates the limit
        pass
    lease = grant_foreign_lease(name)
    holder = dataclasses.replace(fabricate(me()), lease_id=str(lease))
    assert proven_dead(holder)
    record(control_url, name, holder)
    with tenant_lock(tenant, wait_seconds=0) as held:
        held.check()
        assert not lease_alive(lease)


def test_a_zombie_holder_is_taken_over(control_url: str, zombie: int) -> None:
    tenant = f"{TENANT}-zombie"
    name = lock_name(tenant)
    with tenant_lock(tenant, wait_seconds=5):
        pass
    lease = grant_foreign_lease(name)
    started = locks._process_stat(zombie)
    assert started is not None and started[0] == "Z"
    holder = dataclasses.replace(me(), pid=zombie, process_start=started[1], lease_id=str(lease))
    record(control_url, name, holder)
    with tenant_lock(tenant, wait_seconds=0):
        assert not lease_alive(lease)


@pytest.mark.parametrize(("kind", "fabricate"), [pytest.param(k, f, id=k) for k, f in ALIVE])
def test_a_holder_not_proven_dead_keeps_its_lock(control_url: str, kind: str,
                                                 fabricate: Fabricate) -> None:
    tenant = f"{TENANT}-{kind}"
    name = lock_name(tenant)
    with tenant_lock(tenant, wait_seconds=5):
        pass
    lease = grant_foreign_lease(name)
    try:
        holder = dataclasses.replace(fabricate(me()), lease_id=str(lease))
        assert not proven_dead(holder)
        record(control_url, name, holder)
        with (pytest.raises(TenantBusy, match=rf"pid {holder.pid} on host"),
              tenant_lock(tenant, wait_seconds=0)):
            pass
        assert lease_alive(lease)  # untouched
        with LockHolders(control_url) as holders:
            stored = holders.holder(name)
        assert stored is not None and (stored.lease_id, stored.pid) == (str(lease), holder.pid)
    finally:
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id=lease)


def test_the_fence_refuses_a_lost_lock(control_url: str) -> None:
    with tenant_lock(TENANT + "-fence", wait_seconds=5) as held:
        held.check()
        with get_client(sync_client=True) as client:  # an operator frees the slot by hand
            client.release_concurrency_slots_with_lease(lease_id=held.lease_id)
        with pytest.raises(TenantBusy, match="was lost"):
            held.check()


class _Refusing:
    """A Prefect client whose lock requests answer with ``statuses`` in turn, then grant."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.asked = 0

    def increment_concurrency_slots_with_lease(self, **_: object) -> httpx.Response:
        self.asked += 1
        request = httpx.Request("POST", "http://prefect/api/v2/concurrency_limits/increment")
        if self.statuses:
            response = httpx.Response(self.statuses.pop(0), request=request)
            raise httpx.HTTPStatusError("refused", request=request, response=response)
        return httpx.Response(200, request=request, json={
            "lease_id": str(uuid.uuid4()),
            "limits": [{"id": str(uuid.uuid4()), "name": "tenant-t-1", "limit": 1}]})


def test_a_busy_prefect_server_is_asked_again_not_taken_as_a_refusal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 503 (the server's SQLite busy, seen at 500 tenants) is asked again while the wait
    lasts; a 4xx other than 423 stays a refusal; a 503 that outlasts the wait is transient."""
    busy = _Refusing(503, 503)
    monkeypatch.setattr(locks, "get_client", lambda **_: contextlib.nullcontext(busy))
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.01)
    assert isinstance(locks._acquire("tenant-t-1", "t-1", 5, None), uuid.UUID)
    assert busy.asked == 3

    with pytest.raises(TerminalError, match="tenant-t-1"):
        locks._try_acquire(_Refusing(400), "tenant-t-1", "t-1")  # type: ignore[arg-type]
    always = _Refusing(*[503] * 1000)
    monkeypatch.setattr(locks, "get_client", lambda **_: contextlib.nullcontext(always))
    with pytest.raises(TransientError, match="could not grant lock"):
        locks._acquire("tenant-t-1", "t-1", 0.05, None)

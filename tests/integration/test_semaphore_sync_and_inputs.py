"""The blocking facade, and the bad-input table: every bad argument is refused with a
ConfigurationError naming it, before anything is written to the server."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from konductor_sdk import Client, ConfigurationError, Identity, PermitLost, WouldBlock, sync
from konductor_sdk._kernel.objects import CLAIM, MUTEX, RWMUTEX, SEMAPHORE, SESSION
from konductor_sdk.mutex import Mutex
from konductor_sdk.rwmutex import RWMutex
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


async def test_sync_facade(kubeconfig: Path, namespace: str) -> None:
    def script() -> list[Any]:
        seen: list[Any] = []
        client = sync.Client(
            kubeconfig=kubeconfig, namespace=namespace, identity=Identity("script")
        )
        admin = sync.Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("admin"))
        try:
            sem = sync.Semaphore("gpu", permits=2, client=client)
            with sem as permit:
                seen.append(permit.token)
                with sem.hold(weight=1) as second:
                    seen.append(second.token)
                    with pytest.raises(WouldBlock):
                        sem.acquire_nowait()
                    assert sem.status().in_use == 2
            assert sem.status().in_use == 0
            explicit = sem.acquire(weight=2)
            assert not explicit.lost
            explicit.release()

            def doomed_job() -> None:
                # Loss cannot interrupt a blocking body; it is reported on exit.
                with sem as doomed:
                    sync.Semaphore("gpu", client=admin).force_release(doomed.key)
                    seen.append(doomed.wait_lost())
                    assert doomed.lost

            with pytest.raises(PermitLost):
                doomed_job()
            mutex = sync.Mutex("m", client=client)
            with mutex:
                assert mutex.locked()
                with pytest.raises(RuntimeError, match="not re-entrant"):
                    mutex.acquire()
            rw = sync.RWMutex("rw", client=client)
            with rw.read() as r:
                seen.append(r.mode)
            with rw.write() as w:
                seen.append(w.mode)
            seen.append(sem.statistics().acquired)
        finally:
            client.close()
            admin.close()
        return seen

    seen = await anyio.to_thread.run_sync(script)
    assert seen[:2] == [1, 2]
    assert "removed" in seen[2]
    assert seen[3:] == ["read", "write", 4]


def test_ctrl_c_while_waiting_leaves_the_queue(
    kubeconfig: Path,
    namespace: str,
    interrupt_main_thread: Callable[[threading.Event], None],
) -> None:
    with sync.Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("me")) as c:
        sem = sync.Semaphore("ctrl-c", permits=1, client=c)
        queued = threading.Event()

        def note_once_queued() -> None:
            deadline = time.monotonic() + 30
            while not sem.status().waiters and time.monotonic() < deadline:
                time.sleep(0.02)
            queued.set()

        with sem:
            timer = threading.Thread(target=note_once_queued)
            timer.start()
            interrupt_main_thread(queued)
            try:
                with pytest.raises(KeyboardInterrupt):
                    sem.acquire()  # waits: the one unit is held
            finally:
                timer.join(30)
            deadline = time.monotonic() + 30
            while sem.status().waiters:  # the cancelled waiter withdraws its entry
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert sem.status().in_use == 1
        assert sem.status().in_use == 0


def _calls(client: Client) -> list[tuple[str, Callable[[], Awaitable[Any]], str]]:
    """(label, call, expected message fragment) for every kind of bad input."""

    def sem(**kwargs: Any) -> Semaphore:
        return Semaphore("ok", client=client, **kwargs)

    return [
        ("permits=0", lambda: sem(permits=0).acquire(), "permits must be a whole number in [1, "),
        ("permits<0", lambda: sem(permits=-2).acquire(), "permits"),
        ("permits=True", lambda: sem(permits=True).acquire(), "permits"),
        ("permits huge", lambda: sem(permits=10**7).acquire(), "permits"),
        ("burst<0", lambda: sem(permits=1, burst=-1).acquire(), "burst must be"),
        ("burst_seconds=0", lambda: sem(permits=1, burst_seconds=0).acquire(), "burst_seconds"),
        (
            "ttl<0",
            lambda: sem(permits=1, ttl=-1).acquire(),
            "ttl must be whole seconds in [1, 86400]",
        ),
        ("ttl float", lambda: sem(permits=1, ttl=1.5).acquire(), "ttl"),
        ("ttl huge", lambda: sem(permits=1).acquire(ttl=86_401), "ttl"),
        (
            "weight=0",
            lambda: sem(permits=2).acquire(weight=0),
            "weight must be a whole number in [1, ",
        ),
        ("weight<0", lambda: sem(permits=2).acquire(weight=-1), "weight"),
        ("weight>limit", lambda: sem(permits=2).acquire(weight=3), "weight must be <= 2"),
        ("weight>limit nowait", lambda: sem(permits=2).acquire_nowait(weight=3), "<= 2"),
        ("priority huge", lambda: sem(permits=2).acquire(priority=10**9), "priority"),
        ("name upper", lambda: Semaphore("Bad_Name", client=client).acquire(), "name must be"),
        ("name empty", lambda: Semaphore("", client=client).acquire(), "name must be"),
        ("name long", lambda: Semaphore("a" * 254, client=client).acquire(), "name must be"),
        ("name dash", lambda: Semaphore("-x", client=client).acquire(), "name must be"),
        ("namespace", lambda: Semaphore("ok", namespace="a.b").acquire(), "namespace must be"),
        ("ttl=0 no pod", lambda: sem(permits=1, ttl=0).acquire(), "needs a pod identity"),
        ("mutex ttl", lambda: Mutex("m", client=client, ttl=-5).acquire(), "ttl"),
        ("mutex name", lambda: Mutex("M!", client=client).acquire(), "name must be"),
        ("rw readers", lambda: RWMutex("r", client=client, max_readers=0).acquire("read"), "max"),
        ("rw mode", lambda: RWMutex("r", client=client).acquire("both"), "mode must be"),  # type: ignore[arg-type]
    ]


async def test_bad_inputs_are_rejected_before_any_write(client: Client) -> None:
    for label, call, fragment in _calls(client):
        with pytest.raises(ConfigurationError) as info:
            await call()
        assert fragment in str(info.value), (label, str(info.value))
        # Nothing was created: not the object, not a claim, not a session.
        for kind in (SEMAPHORE, MUTEX, RWMUTEX, CLAIM, SESSION):
            listed = await client.store.list(kind, client.namespace)
            assert listed.items == (), label


async def test_weight_above_an_existing_limit_writes_nothing(client: Client) -> None:
    sem = Semaphore("small", permits=4, client=client)
    await sem.create()
    await sem.set_permits(2)
    before = await client.store.get(SEMAPHORE, client.namespace, "small")
    with pytest.raises(ConfigurationError, match="weight must be <= 2"):
        await sem.acquire(weight=3)  # the constructor said 4, the object says 2
    with pytest.raises(ConfigurationError, match=r"weight must be <= 2 \(limit 2 \+ burst 0\)"):
        await sem.acquire(weight=4, burst=True)
    after = await client.store.get(SEMAPHORE, client.namespace, "small")
    assert after.resource_version == before.resource_version

"""Mutex and RWMutex on the real server: exclusion proven from every stored version,
fencing, re-entrancy, readers sharing, writer preference (one queue of claims)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from konductor_sdk import Client, WouldBlock
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, KObject, ResourceKind
from konductor_sdk.fencing import Fence
from konductor_sdk.mutex import Mutex
from konductor_sdk.rwmutex import RWMutex
from tests.integration._semaphore_helpers import Observer, claim_holders, until_queued
from tests.integration._semaphore_helpers import until as until_object

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Client]


async def until(
    client: Client, kind: ResourceKind, name: str, pred: Callable[[KObject], bool]
) -> KObject:
    return await until_object(client, name, pred, kind=kind)


def ids(obj: KObject) -> set[str]:
    return {e["holder"] for e in (obj.status.get("holders") or {}).values()}


async def queued(client: Client, kind: ResourceKind, name: str, holders: list[str]) -> None:
    """Until exactly ``holders`` are queued (in this order) for the lock."""
    await until_queued(client, name, lambda claims: claim_holders(claims) == holders, kind=kind)


async def test_mutex_excludes_across_clients_and_fences(
    client: Client, make_client: MakeClient
) -> None:
    obj = await Mutex("lock", client=client).create()
    start = await client.store.get(MUTEX, client.namespace, "lock")
    assert obj.limit == 1
    observer = Observer(client, "lock", kind=MUTEX)
    fence = Fence()  # downstream: refuses a token older than one it accepted
    inside: list[int] = []
    most = [0]

    async def worker(i: int) -> None:
        mutex = Mutex("lock", client=make_client(f"m{i}"))
        for _ in range(4):
            async with mutex as permit:
                fence.admit(permit.fencing)
                inside.append(permit.token)
                most[0] = max(most[0], len(inside))
                await anyio.lowlevel.checkpoint()
                inside.remove(permit.token)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            await tg.start(observer.run, start.resource_version)
            async with anyio.create_task_group() as workers:
                for i in range(8):
                    workers.start_soon(worker, i)
            final = await until(client, MUTEX, "lock", lambda o: not o.status.get("holders"))
            tg.cancel_scope.cancel()
    assert observer.violations == []
    assert observer.most_units == 1
    assert most[0] == 1
    assert final.status["fencingToken"] == 32
    assert (await Mutex("lock", client=client).status()).phase == "Unlocked"
    assert len(observer.grants) == 32


async def test_mutex_status_nowait_and_reentrancy(client: Client, make_client: MakeClient) -> None:
    mutex = Mutex("m", client=client)
    assert repr(mutex) == f"<Mutex {client.namespace}/m>"
    async with mutex as permit:
        with pytest.raises(RuntimeError, match="not re-entrant"):
            await mutex.acquire()
        with pytest.raises(RuntimeError, match="not re-entrant"):
            async with mutex:
                pass
        other = Mutex("m", client=make_client("other"))
        with pytest.raises(WouldBlock):
            await other.acquire_nowait()
        status = await mutex.status()
        assert (status.phase, status.in_use, status.limit) == ("Locked", 1, 1)
        assert [h.holder for h in status.holders] == [client.identity.holder]
        assert await other.locked()
        got: list[int] = []

        async def take() -> None:
            async with other as p:
                got.append(p.token)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await queued(client, MUTEX, "m", ["other"])
            await permit.release()
    assert got == [permit.token + 1]
    assert not await mutex.locked()
    # Another task of the same process is a separate holder: it just waits its turn.
    first = await mutex.acquire()

    async def second() -> None:
        p = await mutex.acquire()
        await p.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await until_queued(client, "m", lambda claims: len(claims) == 1, kind=MUTEX)
        await first.release()


async def test_rwmutex_readers_share_and_a_waiting_writer_blocks_later_readers(
    client: Client, make_client: MakeClient
) -> None:
    rw = RWMutex("cfg", client=client, max_readers=8)
    readers = [await RWMutex("cfg", client=make_client(f"r{i}")).acquire("read") for i in range(3)]
    status = await rw.status()
    assert (status.phase, status.in_use) == ("Reading", 3)
    assert sorted(h.slot for h in status.holders) == [0, 1, 2]
    order: list[str] = []

    async def take(holder: str, mode: Any) -> None:
        p = await RWMutex("cfg", client=make_client(holder)).acquire(mode)
        order.append(holder)
        await p.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "writer", "write")
        await queued(client, RWMUTEX, "cfg", ["writer"])
        tg.start_soon(take, "late-reader", "read")
        await queued(client, RWMUTEX, "cfg", ["writer", "late-reader"])
        # Readers hold the lock, yet the late reader is not let in ahead of the writer.
        assert ids(await client.store.get(RWMUTEX, client.namespace, "cfg")) == {"r0", "r1", "r2"}
        with pytest.raises(WouldBlock):
            await rw.acquire_nowait("read")
        for p in readers:
            await p.release()
    assert order == ["writer", "late-reader"]
    status = await rw.status()
    assert (status.phase, status.in_use, status.fencing_token) == ("Unlocked", 0, 5)


async def test_rwmutex_writer_excludes_and_reentrancy(client: Client) -> None:
    rw = RWMutex("x", client=client)
    async with rw.write() as w:
        assert w.mode == "write"
        with pytest.raises(RuntimeError, match="not re-entrant"):
            await rw.acquire("read")
        status = await rw.status()
        assert (status.phase, status.in_use, status.limit) == ("Writing", 1024, 1024)
        assert w.slots == tuple(range(1024))
        assert w.fencing.slots == w.slots
    async with rw.read() as r:
        assert r.mode == "read"
        assert r.token == w.token + 1

"""Mutex and RWMutex on the real server: exclusion proven from server state, fencing,
re-entrancy, readers sharing, writer preference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from konductor_sdk import Client, WouldBlock
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, KObject, ResourceKind
from konductor_sdk.mutex import Mutex
from konductor_sdk.rwmutex import RWMutex

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Client]


async def until(
    client: Client, kind: ResourceKind, name: str, pred: Callable[[KObject], bool]
) -> KObject:
    watch = await client.watch(kind, client.namespace)
    with anyio.fail_after(60):
        while True:
            changed = watch.next_change(name)
            obj = watch.get(name)
            if obj is not None and pred(obj):
                return obj
            await changed.wait()


def ids(obj: KObject, field: str = "holders") -> set[str]:
    return {e["holder"] for e in (obj.status.get(field) or {}).values()}


async def test_mutex_excludes_across_clients_and_fences(
    client: Client, make_client: MakeClient
) -> None:
    # Server-side: a raw watch sees every version; never two holders at once.
    obj = await Mutex("lock", client=client).create()
    start = await client.store.get(MUTEX, client.namespace, "lock")
    assert obj.limit == 1
    most: list[int] = [0]
    versions: list[int] = [0]

    async def check() -> None:
        async for event in client.store.watch(
            MUTEX, client.namespace, resource_version=start.resource_version
        ):
            versions[0] += 1
            most[0] = max(most[0], len(event.object.status.get("holders") or {}))

    # Downstream: a store that rejects writes carrying a token lower than one it has seen.
    highest = [0]
    rejected: list[int] = []

    async def worker(i: int) -> None:
        mutex = Mutex("lock", client=make_client(f"m{i}"))
        for _ in range(4):
            async with mutex as permit:
                if permit.token < highest[0]:
                    rejected.append(permit.token)
                highest[0] = permit.token
                await anyio.lowlevel.checkpoint()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(check)
            async with anyio.create_task_group() as workers:
                for i in range(8):
                    workers.start_soon(worker, i)
            final = await until(client, MUTEX, "lock", lambda o: not o.status.get("holders"))
            tg.cancel_scope.cancel()
    assert most[0] == 1
    assert rejected == []
    assert final.status["fencingToken"] == 32
    assert final.status["phase"] == "Unlocked"
    assert versions[0] >= 64  # a grant and a release per cycle, each seen


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
        obj = await client.store.get(MUTEX, client.namespace, "m")
        assert obj.status["currentHolder"] == client.identity.holder
        assert await other.locked()
        got: list[int] = []

        async def take() -> None:
            async with other as p:
                got.append(p.token)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await until(client, MUTEX, "m", lambda o: ids(o, "waiters") == {"other"})
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
        await until(client, MUTEX, "m", lambda o: len(o.status.get("waiters") or {}) == 1)
        await first.release()


async def test_rwmutex_readers_share_and_a_waiting_writer_blocks_later_readers(
    client: Client, make_client: MakeClient
) -> None:
    rw = RWMutex("cfg", client=client, max_readers=8)
    readers = [await RWMutex("cfg", client=make_client(f"r{i}")).acquire("read") for i in range(3)]
    obj = await client.store.get(RWMUTEX, client.namespace, "cfg")
    assert (obj.status["phase"], obj.status["readers"]) == ("Reading", 3)
    order: list[str] = []

    async def take(holder: str, mode: Any) -> None:
        p = await RWMutex("cfg", client=make_client(holder)).acquire(mode)
        order.append(holder)
        await p.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "writer", "write")
        await until(client, RWMUTEX, "cfg", lambda o: ids(o, "waiters") == {"writer"})
        tg.start_soon(take, "late-reader", "read")
        await until(client, RWMUTEX, "cfg", lambda o: "late-reader" in ids(o, "waiters"))
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
        obj = await client.store.get(RWMUTEX, client.namespace, "x")
        assert (obj.status["phase"], obj.status["writer"]) == ("Writing", client.identity.holder)
        assert obj.status["inUse"] == obj.spec["maxReaders"] == 1024
    async with rw.read() as r:
        assert r.mode == "read"
        assert r.token == w.token + 1

"""WaitGroup on the real API server: concurrent add/done, wait, negative counters."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from _barrier_helpers import until

from konductor_sdk import Client, ConfigurationError
from konductor_sdk._kernel.objects import WAITGROUP
from konductor_sdk.waitgroup import WaitGroup

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]


async def test_wait_returns_when_every_worker_is_done(make_client: MakeClient) -> None:
    coordinator = WaitGroup("shards", client=make_client(holder="coordinator"))
    assert await coordinator.add(24) == 24
    clients = [make_client(holder=f"worker-{i}") for i in range(6)]
    observer = make_client(holder="observer")
    finished: list[int] = []
    seen_at_return: list[int] = []

    async def worker(i: int) -> None:
        await WaitGroup("shards", client=clients[i % 6]).done()
        finished.append(i)

    async def waiter() -> None:
        await WaitGroup("shards", client=observer).wait()
        seen_at_return.append((await WaitGroup("shards", client=observer).status()).counter)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await observer.connect()
            await until(observer, WAITGROUP, "shards", lambda o: o.status.get("counter") == 24)
            for i in range(23):
                tg.start_soon(worker, i)
            await until(observer, WAITGROUP, "shards", lambda o: o.status.get("counter") == 1)
            assert seen_at_return == []  # one shard still pending: nobody returned
            tg.start_soon(worker, 23)
    assert sorted(finished) == list(range(24))
    assert seen_at_return == [0]
    status = await coordinator.status()
    assert (status.counter, status.phase, status.epoch) == (0, "Done", 1)


async def test_done_below_zero_is_rejected_without_writing(client: Client) -> None:
    wg = WaitGroup("strict", client=client)
    assert await wg.add(1) == 1
    assert await wg.done() == 0
    before = await client.store.get(WAITGROUP, client.namespace, "strict")
    with pytest.raises(ConfigurationError, match="negative"):
        await wg.done()
    with pytest.raises(ConfigurationError, match="negative"):
        await wg.add(-3)
    after = await client.store.get(WAITGROUP, client.namespace, "strict")
    assert after.resource_version == before.resource_version


async def test_waiting_on_a_zero_counter_returns_at_once(client: Client) -> None:
    wg = WaitGroup("idle", client=client)
    with anyio.fail_after(10):
        await wg.wait()
    assert (await wg.status()).counter == 0


async def test_concurrent_adds_and_dones_never_lose_an_update(make_client: MakeClient) -> None:
    clients = [make_client(holder=f"c{i}") for i in range(4)]

    async def churn(i: int) -> None:
        wg = WaitGroup("churn", client=clients[i % 4])
        for _ in range(5):
            await wg.add(2)
            await wg.done()
            await wg.done()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(churn, i)
    status = await WaitGroup("churn", client=clients[0]).status()
    assert status.counter == 0


async def test_two_hundred_simultaneous_dones_all_get_through(make_client: MakeClient) -> None:
    """Many workers finishing at once contend on one counter: every done() is retried on
    the watched version until it lands (never ConflictExhausted), and a waiter returns."""
    clients = [make_client(holder=f"w{i}") for i in range(8)]
    await WaitGroup("many", client=clients[0]).add(200)
    released = anyio.Event()

    async def waiter() -> None:
        await WaitGroup("many", client=clients[0]).wait()
        released.set()

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            for i in range(200):
                tg.start_soon(WaitGroup("many", client=clients[i % 8]).done)
    assert released.is_set()
    status = await WaitGroup("many", client=clients[1]).status()
    assert (status.counter, status.epoch) == (0, 1)

"""Contention: 32 clients (each with its own identity, session, watches and HTTP session, as
separate processes would have) hammer a small semaphore with weights, priorities,
preemption, nowait tries and cancellations. An independent observer, a raw watch of its
own, checks every version the server stored (no slot ever held twice, the limit never
exceeded by a write that adds grants, every slot's tokens growing), and a per-slot fence
downstream accepts every write made inside a body."""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import pytest

from konductor_sdk import Client, PermitLost, WouldBlock
from konductor_sdk._kernel.objects import SEMAPHORE
from konductor_sdk.fencing import Fence, FencedOut
from konductor_sdk.semaphore import Semaphore
from tests.integration._semaphore_helpers import Observer, holders, until, until_queued

pytestmark = pytest.mark.anyio


async def test_thirty_two_clients_never_exceed_the_limit(
    client: Client, make_client: Callable[..., Client]
) -> None:
    limit, n_clients, cycles = 3, 32, 7
    created = await Semaphore("hot", permits=limit, client=client, ttl=30).create()
    assert created.limit == limit
    obj = await client.store.get(SEMAPHORE, client.namespace, "hot")
    observer = Observer(client, "hot")
    fence = Fence()
    refused: list[FencedOut] = []
    reported: dict[int, tuple[int, ...]] = {}
    outcomes = dict.fromkeys(("held", "would_block", "cancelled", "preempted", "lost"), 0)

    async def worker(i: int) -> None:
        rng = random.Random(i)
        sem = Semaphore("hot", client=make_client(f"c{i}"), ttl=30)
        for _ in range(cycles):
            weight = rng.choice((1, 1, 2))
            priority = rng.choice((0, 0, 1, 2))
            roll = rng.random()
            try:
                if roll < 0.15:
                    p = await sem.acquire_nowait(weight=weight)
                    reported[p.token] = p.slots
                    await p.release()
                elif roll < 0.3:
                    with anyio.move_on_after(rng.uniform(0, 0.05)) as scope:
                        p = await sem.acquire(weight=weight, priority=priority)
                        reported[p.token] = p.slots
                        await p.release()
                    outcomes["cancelled"] += scope.cancelled_caught
                else:
                    async with sem.hold(
                        weight=weight, priority=priority, preemptible=rng.random() < 0.3
                    ) as p:
                        reported[p.token] = p.slots
                        try:
                            fence.admit(p.fencing)  # a write downstream, inside the body
                            await anyio.sleep(rng.uniform(0, 0.01))
                            fence.admit(p.fencing)  # and another, later
                        except FencedOut as exc:
                            refused.append(exc)
                    outcomes["held"] += 1
            except WouldBlock:
                outcomes["would_block"] += 1
            except PermitLost as exc:
                # Preempted, or (on a starved machine) its session ran out: either way the
                # holder was told; safety is the observer's business.
                outcomes["preempted" if "preempted" in str(exc) else "lost"] += 1

    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            await tg.start(observer.run, obj.resource_version)
            async with anyio.create_task_group() as workers:
                for i in range(n_clients):
                    workers.start_soon(worker, i)
            final = await until(client, "hot", lambda o: not holders(o))
            await until_queued(client, "hot", lambda c: c == [])
            await observer.caught_up(final.resource_version)
            tg.cancel_scope.cancel()
    assert observer.violations == []
    assert refused == []  # no legitimate write was fenced out
    assert observer.most_units == limit  # the limit was actually reached
    # Every grant the clients saw is in server state with the same slots...
    tokens = {
        e["token"]: tuple(range(e["slot"], e["slot"] + e["weight"])) for _, e in observer.grants
    }
    assert all(tokens.get(t) == slots for t, slots in reported.items())
    # ...and the observer saw every token ever issued (no grant happened out of its sight).
    assert sorted(tokens) == list(range(1, final.status["fencingToken"] + 1))
    assert outcomes["held"] + outcomes["preempted"] >= n_clients * cycles // 2, outcomes
    assert len(tokens) >= 150, (len(tokens), outcomes)

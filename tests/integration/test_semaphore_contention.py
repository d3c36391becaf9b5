"""Contention: 32 clients (each with its own identity, watch and HTTP session, as separate
processes would have) hammer a small semaphore with weights, priorities, preemption,
nowait tries and cancellations. An independent checker, a raw watch of its own, records
every version the server stored and proves from server state alone that the held weight
never exceeded the limit and that fencing tokens only ever grew."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from konductor_sdk import Client, PermitLost, WouldBlock
from konductor_sdk._kernel.objects import SEMAPHORE, KObject
from konductor_sdk._kernel.store import Store
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


class ServerChecker:
    """Checks every stored version of one object; knows nothing of the clients."""

    def __init__(self, store: Store, namespace: str, name: str, limit: int) -> None:
        self.store, self.namespace, self.name, self.limit = store, namespace, name, limit
        self.versions = 0
        self.last_rv = 0
        self.tokens: dict[str, int] = {}  # key -> token, for every grant ever seen
        self.max_token = 0
        self.max_used = 0
        self.violations: list[str] = []
        self.changed = anyio.Event()

    def record(self, obj: KObject) -> None:
        rv = int(obj.resource_version)
        if rv <= self.last_rv:
            self.violations.append(f"rv went from {self.last_rv} to {rv}")
        self.last_rv = rv
        self.versions += 1
        holders: dict[str, Any] = obj.status.get("holders") or {}
        used = sum(int(e["weight"]) for e in holders.values())
        self.max_used = max(self.max_used, used)
        if used > self.limit:
            self.violations.append(f"rv {rv}: {used} units held, limit {self.limit}")
        new = sorted((int(e["token"]), k) for k, e in holders.items() if k not in self.tokens)
        for token, key in new:
            if token <= self.max_token:
                self.violations.append(f"rv {rv}: token {token} after {self.max_token}")
            self.tokens[key] = token
            self.max_token = max(self.max_token, token)
        for key, e in holders.items():
            if int(e["token"]) != self.tokens[key]:
                self.violations.append(f"rv {rv}: {key} changed token")
        if int(obj.status.get("fencingToken", 0)) < self.max_token:
            self.violations.append(f"rv {rv}: fencingToken behind a granted token")
        self.changed.set()
        self.changed = anyio.Event()

    async def caught_up(self, rv: str) -> None:
        """Wait until the checker has seen version ``rv`` (or a later one)."""
        while self.last_rv < int(rv):
            await self.changed.wait()

    async def run(self, from_rv: str) -> None:
        rv = from_rv
        while True:  # resumed if the server ends the stream
            async for event in self.store.watch(
                SEMAPHORE,
                self.namespace,
                resource_version=rv,
                field_selector=f"metadata.name={self.name}",
            ):
                rv = event.object.resource_version
                if event.type in ("ADDED", "MODIFIED"):
                    self.record(event.object)


async def test_thirty_two_clients_never_exceed_the_limit(
    client: Client, make_client: Callable[..., Client]
) -> None:
    limit, n_clients, cycles = 3, 32, 7
    created = await Semaphore("hot", permits=limit, client=client, ttl=30).create()
    assert created.limit == limit
    obj = await client.store.get(SEMAPHORE, client.namespace, "hot")
    checker = ServerChecker(client.store, client.namespace, "hot", limit)
    reported: dict[str, int] = {}
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
                    reported[p.key] = p.token
                    await p.release()
                elif roll < 0.3:
                    with anyio.move_on_after(rng.uniform(0, 0.05)) as scope:
                        p = await sem.acquire(weight=weight, priority=priority)
                        reported[p.key] = p.token
                        await p.release()
                    outcomes["cancelled"] += scope.cancelled_caught
                else:
                    async with sem.hold(
                        weight=weight, priority=priority, preemptible=rng.random() < 0.3
                    ) as p:
                        reported[p.key] = p.token
                        await anyio.sleep(rng.uniform(0, 0.01))
                    outcomes["held"] += 1
            except WouldBlock:
                outcomes["would_block"] += 1
            except PermitLost as exc:
                # Preempted, or (on a starved machine) not renewed in time: either way
                # the holder was told; safety is the checker's business.
                outcomes["preempted" if "preempted" in str(exc) else "lost"] += 1

    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            tg.start_soon(checker.run, obj.resource_version)
            async with anyio.create_task_group() as workers:
                for i in range(n_clients):
                    workers.start_soon(worker, i)
            final = await client.store.get(SEMAPHORE, client.namespace, "hot")
            await checker.caught_up(final.resource_version)
            tg.cancel_scope.cancel()
    assert not final.status["holders"]
    assert not final.status["waiters"]
    assert checker.violations == []
    assert checker.max_used == limit  # the limit was actually reached
    # Every grant the clients saw is in server state with the same token...
    assert all(checker.tokens.get(k) == t for k, t in reported.items())
    # ...and the checker saw every token ever issued (no grant happened out of its sight).
    assert sorted(checker.tokens.values()) == list(range(1, checker.max_token + 1))
    assert outcomes["held"] + outcomes["preempted"] >= n_clients * cycles // 2, outcomes
    assert checker.max_token >= 150, (checker.max_token, outcomes)

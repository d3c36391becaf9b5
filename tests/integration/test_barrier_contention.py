"""Many concurrent parties on one barrier: it opens exactly once per generation, every
party gets a distinct rank, and parties that gave up do not count."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _barrier_helpers import claimed_parties, until

from konductor_sdk import Client
from konductor_sdk._kernel.objects import BARRIER
from konductor_sdk._machines import barrier as bs
from konductor_sdk.barrier import Barrier

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]


class BarrierChecker:
    """Checks every stored version of one barrier, from a raw watch of its own (not the
    SDK's): counters consistent, generations move on only from concluded ones, each opens
    at most once and only with enough arrivals, no batch recorded twice."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self.violations: list[str] = []
        self.versions = 0
        self.last: dict[str, Any] | None = None
        self.opened: dict[int, int] = {}  # generation -> arrived at the opening
        self.changed = anyio.Event()
        self.last_rv = 0

    def record(self, obj: Any) -> None:
        s, rv = dict(obj.status), int(obj.resource_version)
        self.last_rv, self.versions = rv, self.versions + 1
        if not s:
            return
        bad = self.violations.append
        by = sum((s.get("arrivedBy") or {}).values())
        departed = sum(c for _, c in s.get("departed") or ())
        if not s.get("arrived", 0) == by == s.get("nextIndex", 0) - departed:
            bad(f"rv {rv}: counters disagree: {s}")
        ids = [r["batch"] for r in s.get("recent") or ()]
        if len(ids) != len(set(ids)):
            bad(f"rv {rv}: a batch recorded twice")
        old = self.last
        g = s["generation"]
        if old is not None:
            if g < old["generation"] or g > old["generation"] + 1:
                bad(f"rv {rv}: generation {old['generation']} -> {g}")
            if g == old["generation"] + 1 and old["phase"] == bs.WAITING:
                bad(f"rv {rv}: moved on from a waiting generation")
            if g == old["generation"] and old["phase"] != bs.WAITING != s["phase"] != old["phase"]:
                bad(f"rv {rv}: generation {g} changed its outcome")
        entering = s["phase"] == bs.OPEN and (
            old is None or old["generation"] != g or old["phase"] != bs.OPEN
        )
        if entering:
            if g in self.opened:
                bad(f"rv {rv}: generation {g} opened twice")
            if s["arrived"] < obj.spec["expected"]:
                bad(f"rv {rv}: opened with {s['arrived']} of {obj.spec['expected']}")
            self.opened[g] = s["arrived"]
        self.last = s
        self.changed.set()
        self.changed = anyio.Event()

    async def run(self) -> None:
        await self.client.connect()
        listed = await self.client.store.list(BARRIER, self.client.namespace)
        rv = listed.resource_version
        while True:
            async for event in self.client.store.watch(
                BARRIER,
                self.client.namespace,
                resource_version=rv,
                field_selector=f"metadata.name={self.name}",
            ):
                rv = event.object.resource_version
                if event.type in ("ADDED", "MODIFIED"):
                    self.record(event.object)

    async def caught_up(self, rv: str) -> None:
        while self.last_rv < int(rv):
            await self.changed.wait()


async def history(client: Client, name: str) -> list[dict[str, Any]]:
    await client.connect()
    obj = await client.store.get(BARRIER, client.namespace, name)
    return list(obj.status["history"])


async def test_64_parties_as_tasks_open_together(make_client: MakeClient) -> None:
    clients = [make_client(holder=f"proc-{i}") for i in range(8)]
    barriers = [Barrier("sixty-four", expected=64, client=clients[i % 8]) for i in range(64)]
    checker = BarrierChecker(make_client("checker"), "sixty-four")
    ranks: dict[int, int] = {}

    async def party(i: int) -> None:
        ranks[i] = await barriers[i].wait()

    with anyio.fail_after(90):
        async with anyio.create_task_group() as outer:
            outer.start_soon(checker.run)
            async with anyio.create_task_group() as tg:
                for i in range(64):
                    tg.start_soon(party, i)
            obj = await clients[0].store.get(BARRIER, clients[0].namespace, "sixty-four")
            await checker.caught_up(obj.resource_version)
            outer.cancel_scope.cancel()
    assert checker.violations == []
    assert checker.opened == {1: 64}
    assert sorted(ranks.values()) == list(range(64))
    await claimed_parties(clients[0], "sixty-four", 64)
    status = await barriers[0].status()
    assert (status.phase, status.arrived, status.generation) == (bs.OPEN, 64, 1)
    assert {a.party: a.index for a in status.arrivals} == {
        barriers[i].party: ranks[i] for i in range(64)
    }
    assert [h["phase"] for h in await history(clients[0], "sixty-four")] == [bs.OPEN]
    # Each party took part in one arrival write (its process's combined one); with 8
    # processes there were at most 8 + a few writes in all (the last one opened it).
    assert [b.statistics().writes for b in barriers] == [1] * 64


async def test_churn_with_cancellations_keeps_ranks_consistent(make_client: MakeClient) -> None:
    """12 parties loop on a barrier for 6; a third of their waits are cancelled at random
    moments. Every generation opens once; in each, the ranks told are distinct and below
    the number it opened with; when everything is cancelled, no arrival is left behind."""
    rng = random.Random(4)
    clients = [make_client(holder=f"c{i}") for i in range(4)]
    observer = make_client(holder="observer")
    barriers = [
        Barrier("churn", expected=6, client=clients[i % 4], party=f"p{i}") for i in range(12)
    ]
    told: dict[int, dict[str, int]] = {}  # generation -> party -> rank
    cancelled = 0

    async def party(b: Barrier, seed: int) -> None:
        nonlocal cancelled
        local = random.Random(seed)
        while True:
            with anyio.CancelScope() as scope:
                if local.random() < 1 / 3:
                    scope.deadline = anyio.current_time() + local.uniform(0, 0.2)
                generation = await b.arrive()
                rank = await b.wait_open()
                told.setdefault(generation, {})[b.party or ""] = rank
            if scope.cancelled_caught:
                cancelled += 1

    def opened(obj: Any) -> bool:
        return sum(h["phase"] == bs.OPEN for h in obj.status.get("history", ())) >= 5

    checker = BarrierChecker(make_client("checker"), "churn")
    with anyio.fail_after(60):
        async with anyio.create_task_group() as outer:
            outer.start_soon(checker.run)
            async with anyio.create_task_group() as tg:
                for b in barriers:
                    tg.start_soon(party, b, rng.random())
                await observer.connect()
                await until(observer, BARRIER, "churn", opened)
                tg.cancel_scope.cancel()
            last = await observer.store.get(BARRIER, observer.namespace, "churn")
            await checker.caught_up(last.resource_version)
            outer.cancel_scope.cancel()
    assert checker.violations == []
    assert len(checker.opened) >= 5
    assert cancelled > 0
    obj = await observer.store.get(BARRIER, observer.namespace, "churn")
    history = obj.status["history"]
    generations = [h["generation"] for h in history if h["phase"] == bs.OPEN]
    assert len(generations) == len(set(generations)) >= 5  # each opened once
    for generation, ranks in told.items():
        values = sorted(ranks.values())
        assert len(values) == len(set(values)), generation  # distinct ranks
        # ... and below the count it opened with, as the independent checker saw it
        assert values[-1] < checker.opened[generation], generation
    if obj.status["phase"] == bs.WAITING:
        # Every waiter was cancelled; each arrival is withdrawn (by its caller, or by the
        # combined writer when the cancellation caught its write in flight).
        with anyio.fail_after(20):
            await until(observer, BARRIER, "churn", lambda o: o.status.get("arrived") == 0)
    else:
        assert obj.status["phase"] == bs.OPEN


async def test_a_late_party_joins_the_next_generation(make_client: MakeClient) -> None:
    first = [Barrier("late", expected=2, client=make_client(holder=f"a{i}")) for i in range(2)]
    async with anyio.create_task_group() as tg:
        for b in first:
            tg.start_soon(b.wait)
    late = Barrier("late", expected=2, client=make_client(holder="late"))
    assert await late.arrive() == 2
    partner = Barrier("late", expected=2, client=make_client(holder="partner"))
    results = []
    async with anyio.create_task_group() as tg:

        async def wait(b: Barrier) -> None:
            results.append(await b.wait_open() if b is late else await b.wait())

        tg.start_soon(wait, late)
        tg.start_soon(wait, partner)
    assert sorted(results) == [0, 1]
    assert (await late.status()).generation == 2

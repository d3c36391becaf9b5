"""Scenario 3: a Barrier with 256 parties — last arrival → last waiter released.

The parties live in several child processes (8 full, 4 quick), each sharing one client
(one HTTP session, one watch) among its parties, plus the *last* party in the harness's
own process. Per round, every child's parties call ``wait()`` at once (a process's
simultaneous arrivals are combined into few writes by the SDK); once the harness's watch
shows 255 arrivals in the generation, the last party calls ``wait()`` at ``t0``. Each
party records when its ``wait()`` returned. Figures: ``(last release) - t0`` and the
median party's ``release - t0``, pooled over all rounds; the time the 255 arrivals took,
and requests and 409s per party. Rounds reuse the barrier (it is cyclic). Arrivals keep
the default TTL (30 s), so they are renewed while the parties wait, as in production.

Baseline, same object, same clients, every round: the harness PATCHes an annotation on
the barrier and each process reports when its watch cache had it; ``(last seen) - sent``
is the floor of "one write, every process told".
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any, ClassVar, final

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import BARRIER, KObject, ResourceKind

from .._baselines import annotation, next_value, patch_annotation
from .._child import Child, Link
from .._harness import Context, Scenario, request_counts
from .._report import Measurement, Row

NAME = "parties"
PARTIES = 256


async def _until(client: Client, name: str, done: Any) -> KObject:
    watch = await client.watch(BARRIER, client.namespace)
    while True:
        changed = watch.next_change(name)
        obj = watch.get(name)
        if obj is not None and done(obj):
            return obj
        await changed.wait()


def _stats_since(client: Client, before: Counter[str]) -> dict[str, int]:
    delta = Counter(client.store.stats)
    delta.subtract(before)
    return dict(delta)


async def barrier_child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """A process with ``parties`` parties sharing one client; rounds on command."""
    from konductor_sdk.barrier import Barrier

    index = params["index"]
    identity = Identity(holder=f"barrier-{index}")
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        await client.watch(BARRIER, client.namespace)
        barriers = [
            Barrier(NAME, expected=PARTIES, client=client, party=f"p{index}-{i}")
            for i in range(params["parties"])
        ]
        await link.send("ready")
        while True:
            command = await link.receive()
            before = client.store.stats.copy()
            if command["op"] == "stop":
                return {}
            if command["op"] == "watch":
                value = command["value"]
                await link.send("watching")
                await _until(client, NAME, lambda obj, v=value: annotation(obj) == v)
                await link.send("seen", t=time.monotonic())
            elif command["op"] == "round":
                releases: list[float] = []
                async with anyio.create_task_group() as tg:
                    for barrier in barriers:
                        tg.start_soon(_wait, barrier, releases)
                await link.send("released", releases=releases, stats=_stats_since(client, before))
            else:
                raise ValueError(f"unknown command {command!r}")


async def _wait(barrier: Any, releases: list[float]) -> None:
    await barrier.wait()
    releases.append(time.monotonic())


@final
class BarrierScenario(Scenario):
    name: ClassVar[str] = "barrier"
    number: ClassVar[str] = "3"
    title: ClassVar[str] = f"Barrier, {PARTIES} parties"
    rows: ClassVar[tuple[Row, ...]] = (
        Row(
            "last arrival → last waiter released, p50 of all rounds",
            "last_release_ms.pooled_p50",
            "fanout_ms.pooled_p50",
            "write → every process's watch",
        ),
        Row(
            "last arrival → last waiter released, p99 of all rounds",
            "last_release_ms.pooled_p99",
            "fanout_ms.pooled_p99",
            "write → every process's watch",
        ),
        Row("last arrival → median waiter released, p50", "median_release_ms.pooled_p50"),
        Row("API writes per party (successful)", "per_party.writes_ok"),
        Row("409s per party", "per_party.conflicts"),
        Row("GETs per party", "per_party.reads"),
        Row("255 simultaneous arrivals: time until all recorded", "arrivals_s"),
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (BARRIER,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.barrier",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 3)
    repeat_cap_s: ClassVar[tuple[float, float]] = (150.0, 180.0)

    async def setup(self, ctx: Context) -> None:
        self.processes = ctx.size(full=8, quick=4)
        # The last party is the harness's own; the children share the other 255.
        shares = [(PARTIES - 1) // self.processes] * self.processes
        shares[0] += (PARTIES - 1) - sum(shares)
        self.children: list[Child] = []
        async with anyio.create_task_group() as tg:
            for index, share in enumerate(shares):
                tg.start_soon(self._spawn, ctx, index, share)
        self.client = await ctx.client("barrier-last")
        await self.client.watch(BARRIER, self.client.namespace)

    async def _spawn(self, ctx: Context, index: int, parties: int) -> None:
        child = await ctx.spawn(
            f"{__name__}:barrier_child", {"index": index, "parties": parties}, name=f"p{index}"
        )
        await child.expect("ready")
        self.children.append(child)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        from konductor_sdk.barrier import Barrier

        rounds = ctx.size(full=3, quick=1)
        last = Barrier(NAME, expected=PARTIES, client=self.client, party="last")
        m = Measurement()
        last_release, median_release, fanout, arrivals = [], [], [], []
        stats: Counter[str] = Counter()
        for _ in range(rounds):
            before = self.client.store.stats.copy()
            generation = await self._generation() + 1
            started = time.monotonic()
            for child in self.children:
                await child.send(op="round")
            await _until(
                self.client,
                NAME,
                lambda obj, generation=generation: (
                    obj.status.get("generation") == generation
                    and len(obj.status.get("arrivals") or {}) >= PARTIES - 1
                ),
            )
            t0 = time.monotonic()
            arrivals.append(t0 - started)
            await last.wait()
            releases = [time.monotonic()]
            for child in self.children:
                message = await child.expect("released")
                releases += message["releases"]
                stats.update(message["stats"])
            stats.update(_stats_since(self.client, before))
            last_release.append((max(releases) - t0) * 1000)
            median_release.append((statistics.median(releases) - t0) * 1000)
            fanout.append(await self._fanout())
        m.add_series("last_release_ms", last_release)
        m.add_series("median_release_ms", median_release)
        m.add_series("fanout_ms", fanout)
        m.add("arrivals_s", statistics.median(arrivals), "s")
        m.add_counts("per_party", request_counts(Counter(), stats), PARTIES * rounds)
        m.notes.append(
            f"{self.processes} processes share {PARTIES - 1} parties, the harness has the last"
        )
        return m

    async def _generation(self) -> int:
        obj = (await self.client.watch(BARRIER, self.client.namespace)).get(NAME)
        return 0 if obj is None else int(obj.status.get("generation") or 0)

    async def _fanout(self) -> float:
        """One annotation PATCH → the last process whose watch has it (ms)."""
        value = next_value()
        for child in self.children:
            await child.send(op="watch", value=value)
        for child in self.children:
            await child.expect("watching")
        sent = time.monotonic()
        await patch_annotation(self.client, BARRIER, NAME, value)
        seen = [float((await child.expect("seen"))["t"]) for child in self.children]
        await _until(self.client, NAME, lambda obj: annotation(obj) == value)
        return (max(seen) - sent) * 1000

    async def teardown(self, ctx: Context) -> None:
        for child in self.children:
            if child.process.returncode is None:
                await child.send(op="stop")


SCENARIO = BarrierScenario()

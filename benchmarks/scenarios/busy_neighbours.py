"""Scenario 10: busy neighbours — what other Semaphores' traffic costs one user of one.

A process watches each kind it uses once per namespace (scenario 9), so every write to any
Semaphore of the namespace reaches it as one watch event it decodes, whether or not it
uses that Semaphore. Per repeat and per neighbour write rate R (0 ... 400 writes/s: a
child process drives 8 other Semaphores with acquire + release cycles paced to R/2 per
second), an observer process runs twice, once in the neighbours' namespace and once in a
namespace of its own (the same load on the server, none of the events), and reports:

* the watch events and bytes it received per second while idle for a few seconds;
* its CPU per second over the same window (what decoding the neighbours costs it);
* its own acquire + release, 20 times (p50).

The difference between the two observers is the cost of sharing the namespace; what they
have in common is the cost of sharing the server.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, ClassVar, final

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import SEMAPHORE, ResourceKind

from .._child import Link, rusage_cpu_seconds
from .._harness import Context, Scenario, cycle_round_trips, per_size
from .._report import Measurement, Row

RATES_FULL = (0, 50, 200, 400)
RATES_QUICK = (0, 50)
NEIGHBOURS = 8
IDLE_SECONDS = 5.0
CYCLES = 20
WHERE = ("same", "other")


async def neighbours_child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """8 Semaphores, each cycled (acquire + release, 2 writes) at an even share of the rate."""
    from konductor_sdk.semaphore import Semaphore

    per_second = float(params["writes_per_s"]) / 2 / NEIGHBOURS
    identity = Identity(holder=params["identity"])
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        cycles = [0]

        async def cycle_one(index: int) -> None:
            semaphore = Semaphore(f"neighbour-{index}", permits=4, client=client)
            next_at = time.monotonic()
            while True:
                await (await semaphore.acquire()).release()
                cycles[0] += 1
                next_at += 1 / per_second
                await anyio.sleep(max(0.0, next_at - time.monotonic()))  # paced, not polled

        async with anyio.create_task_group() as tg:
            for index in range(NEIGHBOURS):
                tg.start_soon(cycle_one, index)
            await anyio.sleep(1.0)  # every neighbour has made its first cycle
            await link.send("ready")
            began, counted = time.monotonic(), cycles[0]
            await link.receive()  # "stop"
            elapsed, done = time.monotonic() - began, cycles[0] - counted
            tg.cancel_scope.cancel()
    return {"writes_per_s": 2 * done / elapsed}


async def observer_child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """One user of one Semaphore: idle for a while, then acquire + release 20 times."""
    from konductor_sdk.semaphore import Semaphore

    identity = Identity(holder=params["identity"])
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        semaphore = Semaphore("mine", permits=1, client=client)
        await (await semaphore.acquire()).release()  # its watches are running
        await link.send("ready")
        await link.receive()  # "go"
        before, cpu = client.store.stats.copy(), rusage_cpu_seconds()
        await anyio.sleep(IDLE_SECONDS)
        cpu = rusage_cpu_seconds() - cpu
        delta = Counter(client.store.stats)
        delta.subtract(before)
        cycles = await cycle_round_trips(semaphore, CYCLES)
    return {
        "events_per_s": delta["watch_event"] / IDLE_SECONDS,
        "kib_per_s": delta["watch_bytes"] / IDLE_SECONDS / 1024,
        "cpu_ms_per_s": cpu * 1000 / IDLE_SECONDS,
        "cycles_ms": cycles,
    }


@final
class BusyNeighbours(Scenario):
    name: ClassVar[str] = "busy_neighbours"
    number: ClassVar[str] = "10"
    title: ClassVar[str] = "Busy neighbours: other Semaphores' writes, one user of one (cost vs R)"
    rows: ClassVar[tuple[Row, ...]] = tuple(
        row
        for r in RATES_FULL
        for row in (
            Row(f"R={r}: neighbours' writes/s achieved", f"r{r}.writes_per_s"),
            Row(f"R={r}: same namespace: watch events/s received", f"r{r}.same.events_per_s"),
            Row(f"R={r}: same namespace: watch KiB/s received", f"r{r}.same.kib_per_s"),
            Row(f"R={r}: same namespace: CPU ms/s while idle", f"r{r}.same.cpu_ms_per_s"),
            Row(f"R={r}: other namespace: CPU ms/s while idle", f"r{r}.other.cpu_ms_per_s"),
            Row(f"R={r}: same namespace: acquire + release p50", f"r{r}.same.cycle_ms.p50"),
            Row(f"R={r}: other namespace: acquire + release p50", f"r{r}.other.cycle_ms.p50"),
        )
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 1)
    repeat_cap_s: ClassVar[tuple[float, float]] = (120.0, 600.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        return await per_size(ctx, RATES_FULL, RATES_QUICK, lambda m, r: self._one(ctx, m, r))

    async def _one(self, ctx: Context, m: Measurement, rate: int) -> None:
        busy = await ctx.new_namespace(f"busy-{rate}")
        quiet = await ctx.new_namespace(f"quiet-{rate}")
        neighbours = None
        if rate:
            params = {"namespace": busy, "writes_per_s": rate, "identity": f"neighbours-{rate}"}
            neighbours = await ctx.spawn(f"{__name__}:neighbours_child", params, name=busy)
            await neighbours.expect("ready")
        for where, namespace in zip(WHERE, (busy, quiet), strict=True):
            params = {"namespace": namespace, "identity": f"observer-{where}-{rate}"}
            observer = await ctx.spawn(f"{__name__}:observer_child", params, name=namespace)
            await observer.expect("ready")
            await observer.send(command="go")
            result = await observer.expect("result")
            prefix = f"r{rate}.{where}"
            m.add(f"{prefix}.events_per_s", result["events_per_s"], "events/s")
            m.add(f"{prefix}.kib_per_s", result["kib_per_s"], "KiB/s")
            m.add(f"{prefix}.cpu_ms_per_s", result["cpu_ms_per_s"], "ms/s")
            m.add_series(f"{prefix}.cycle_ms", result["cycles_ms"])
        achieved = 0.0
        if neighbours is not None:
            await neighbours.send(command="stop")
            achieved = (await neighbours.expect("result"))["writes_per_s"]
        m.add(f"r{rate}.writes_per_s", achieved, "writes/s")


SCENARIO = BusyNeighbours()

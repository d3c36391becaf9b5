"""Scenario 3b: what a Barrier costs as the number of parties grows (8 ... 10,000).

The same children as scenario 3 (8 processes, 4 with ``--quick``), one fresh barrier per
size ``N``: the children's parties (``N - 1`` in all) arrive at once, then the harness's
last party opens it. Per size: the time the arrivals took, the release latency of every
party after the last arrival (p50/p99), the size of the barrier object at the opening (it
holds counters, so it does not grow with ``N``), and the requests per party of all
processes (arrival writes are one per process batch; each batch also creates one arrival
claim, and a process's first arrival creates its session).
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, final

from konductor_sdk._kernel.objects import BARRIER, ResourceKind

from .._harness import Context, Scenario, request_counts
from .._report import Measurement, Row
from .barrier import FANOUT_SAMPLES, fanout, one_round, spawn_children

SIZES_FULL = (8, 64, 512, 4096, 10_000)
SIZES_QUICK = (8, 64, 512)


def _rows(sizes: tuple[int, ...]) -> tuple[Row, ...]:
    rows: list[Row] = []
    for n in sizes:
        rows += [
            Row(f"N={n:,}: arrivals, time until all recorded", f"n{n}.arrive_s"),
            Row(f"N={n:,}: last arrival → party released, p50", f"n{n}.release_ms.pooled_p50"),
            Row(
                f"N={n:,}: last arrival → party released, p99",
                f"n{n}.release_ms.pooled_p99",
                f"n{n}.fanout_ms.pooled_p99",
                "write → every process's watch, p99",
            ),
            Row(
                f"N={n:,}: last arrival → each process told, p99",
                f"n{n}.told_ms.pooled_p99",
                f"n{n}.fanout_ms.pooled_p99",
                "write → every process's watch, p99",
            ),
            Row(f"N={n:,}: barrier object at the opening", f"n{n}.object_bytes"),
            Row(f"N={n:,}: API writes per party", f"n{n}.per_party.writes"),
            Row(f"N={n:,}: 409s per party", f"n{n}.per_party.conflicts"),
        ]
    return tuple(rows)


@final
class BarrierScaleScenario(Scenario):
    name: ClassVar[str] = "barrier_scale"
    number: ClassVar[str] = "3b"
    title: ClassVar[str] = "Barrier cost vs parties (8 ... 10,000)"
    rows: ClassVar[tuple[Row, ...]] = _rows(SIZES_FULL)
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (BARRIER,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.barrier",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 2)
    repeat_cap_s: ClassVar[tuple[float, float]] = (150.0, 400.0)
    in_quick_suite: ClassVar[bool] = False

    async def setup(self, ctx: Context) -> None:
        self.sizes = SIZES_QUICK if ctx.quick else SIZES_FULL
        self.processes = ctx.size(full=8, quick=4)
        self.children = await spawn_children(ctx, self.processes)
        self.client = await ctx.client("scale-last")
        await self.client.watch(BARRIER, self.client.namespace)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        m = Measurement()
        for n in self.sizes:
            result = await one_round(
                self.client, self.children, name=f"scale-{n}-{repeat}", expected=n
            )
            m.add_series(f"n{n}.release_ms", result["release_ms"])
            m.add_series(f"n{n}.told_ms", result["told_ms"])
            name = f"scale-{n}-{repeat}"
            floor = [
                (await fanout(self.client, self.children, name))[0] for _ in range(FANOUT_SAMPLES)
            ]
            m.add_series(f"n{n}.fanout_ms", floor)
            m.add(f"n{n}.arrive_s", result["arrive_s"], "s")
            m.add(f"n{n}.object_bytes", result["bytes"], "bytes")
            counts = request_counts(Counter(), result["stats"])
            m.add_counts(f"n{n}.per_party", counts, n)
        m.notes.append(
            f"{self.processes} processes; one fresh barrier per size (the first arrival of "
            "each process there also pays for its ensure-exists GET)"
        )
        return m

    async def teardown(self, ctx: Context) -> None:
        for child in self.children:
            if child.process.returncode is None:
                await child.send(op="stop")


SCENARIO = BarrierScaleScenario()

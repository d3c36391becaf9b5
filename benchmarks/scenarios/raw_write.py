"""Baseline: single-object write throughput with 32 concurrent writers (tasks).

``blind``: unconditional merge PATCHes (no resourceVersion, so never a 409) — the rate at
which the apiserver and etcd can apply writes to one object, the ceiling for anything
that writes it. ``cas``: the naive optimistic loop (GET, PUT with the resourceVersion,
retry at once on 409) — what compare-and-swap costs without a watch cache or backoff.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, final

from .._baselines import ensure_configmap
from .._harness import Context, Scenario, request_counts
from .._load import LoadGroup
from .._report import Measurement, Row

WRITERS = 32


@final
class RawWrite(Scenario):
    name: ClassVar[str] = "raw_write"
    number: ClassVar[str] = "B3"
    title: ClassVar[str] = f"Baseline: {WRITERS} writers on one object"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("blind PATCH writes/s", "blind.per_s"),
        Row("naive CAS writes/s", "cas.per_s", "blind.per_s", "blind PATCH"),
        Row("naive CAS: 409s per successful write", "cas.conflicts_per_write"),
    )
    repeat_cap_s: ClassVar[tuple[float, float]] = (30.0, 60.0)

    async def setup(self, ctx: Context) -> None:
        self.group = LoadGroup(WRITERS, processes=False)
        await self.group.start(ctx, label="raw-write")
        await ensure_configmap(await ctx.client("raw-write-setup"), "raw-write")

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        seconds = ctx.seconds(full=4.0, quick=1.5)
        m = Measurement()
        blind = await self.group.phase(
            "blind", "configmap", "raw-write", warmup=0.5, seconds=seconds
        )
        m.add("blind.per_s", blind.per_second, "writes/s")
        cas = await self.group.phase("cas", "configmap", "raw-write", warmup=0.5, seconds=seconds)
        m.add("cas.per_s", cas.per_second, "writes/s")
        m.add("cas.conflicts_per_write", cas.cas_conflicts / max(cas.done, 1), "409s")
        counts = request_counts(Counter(), cas.stats)
        m.add("cas.requests_per_write", (counts["writes"] + counts["reads"]) / max(cas.done, 1))
        return m


SCENARIO = RawWrite()

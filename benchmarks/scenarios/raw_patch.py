"""Baseline: one raw PATCH round trip (the floor of any write Konductor makes).

A merge PATCH of one annotation on a ConfigMap, sent through a Konductor client's store,
repeated sequentially. Konductor scenarios pair themselves with the same measurement on
their own object; this standalone version needs no CRD, which makes it the cheapest
scenario (the smoke test runs it).
"""

from __future__ import annotations

from typing import ClassVar, final

from .._baselines import CONFIGMAP, ensure_configmap, patch_round_trips
from .._harness import Context, Scenario, request_counts
from .._report import Measurement, Row


@final
class RawPatch(Scenario):
    name: ClassVar[str] = "raw_patch"
    number: ClassVar[str] = "B1"
    title: ClassVar[str] = "Baseline: raw PATCH round trip"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("PATCH round trip p50", "patch_ms.p50"),
        Row("PATCH round trip p99", "patch_ms.p99"),
        Row("API writes per PATCH", "requests_per_patch.writes"),
    )
    repeat_cap_s: ClassVar[tuple[float, float]] = (30.0, 60.0)

    async def setup(self, ctx: Context) -> None:
        self.client = await ctx.client("raw-patch")
        await ensure_configmap(self.client, "raw-patch")

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        count = ctx.size(full=300, quick=60)
        await patch_round_trips(self.client, CONFIGMAP, "raw-patch", 10)  # warm-up
        before = self.client.store.stats.copy()
        samples = await patch_round_trips(self.client, CONFIGMAP, "raw-patch", count)
        m = Measurement()
        m.add_series("patch_ms", samples)
        m.add_counts(
            "requests_per_patch",
            request_counts(before, self.client.store.stats),
            count,
            "requests",
        )
        return m


SCENARIO = RawPatch()

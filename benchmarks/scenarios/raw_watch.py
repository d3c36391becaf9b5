"""Baseline: PATCH by one client → the change in another client's shared watch cache.

The floor of every wake-up path in Konductor (a release or an arrival is a write; the
waiters learn about it from their watch). Writer and watcher are separate clients with
their own HTTP sessions and watches, as two processes would be.
"""

from __future__ import annotations

from typing import ClassVar, final

from .._baselines import CONFIGMAP, ensure_configmap, watch_latencies
from .._harness import Context, Scenario
from .._report import Measurement, Row


@final
class RawWatch(Scenario):
    name: ClassVar[str] = "raw_watch"
    number: ClassVar[str] = "B2"
    title: ClassVar[str] = "Baseline: write → other client's watch"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("PATCH sent → seen by watcher p50", "watch_ms.p50"),
        Row("PATCH sent → seen by watcher p99", "watch_ms.p99"),
    )
    repeat_cap_s: ClassVar[tuple[float, float]] = (30.0, 60.0)

    async def setup(self, ctx: Context) -> None:
        self.writer = await ctx.client("raw-watch-writer")
        self.watcher = await ctx.client("raw-watch-watcher")
        await ensure_configmap(self.writer, "raw-watch")

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        count = ctx.size(full=200, quick=50)
        await watch_latencies(self.writer, self.watcher, CONFIGMAP, "raw-watch", 5)
        samples = await watch_latencies(self.writer, self.watcher, CONFIGMAP, "raw-watch", count)
        m = Measurement()
        m.add_series("watch_ms", samples)
        return m


SCENARIO = RawWatch()

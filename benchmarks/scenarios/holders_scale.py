"""Scenario 8: one Semaphore, N concurrent holders — cost versus N.

Queued waiters live in claims of their own (scenario 7), but the grants themselves must be
decided together, so they are entries of the Semaphore object: a grant or a release
rewrites an object that lists every current holder. This scenario measures what that costs
as the number of holders grows. For N = 8 ... 4,000 (an object holds at most 4,096 grants,
docs/semaphore.md), per repeat and per N, in one process:

* **fill**: N tasks acquire a permit each of a Semaphore with N + 1 permits and keep it;
  the time until all hold one (the grants go out in group-committed writes of up to 64);
* **cycle**: with the N holders in place, acquire + release of the last permit, 5 times;
  and 5 raw PATCHes (an annotation) on the same object, the baseline;
* **the apiserver's own time** per grant or release write and per raw PATCH, from its
  ``/metrics`` (``apiserver_request_duration_seconds``): what no client can take away;
* the object's size (its JSON) with the N grants in it, and the time to release them all.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import TYPE_CHECKING, ClassVar, final

import anyio

from konductor_sdk._kernel.objects import SEMAPHORE, ResourceKind

from .._baselines import patch_round_trips
from .._harness import Context, Scenario, cycle_round_trips, mean_ms, per_size
from .._report import Measurement, Row

if TYPE_CHECKING:
    from konductor_sdk.semaphore import Permit

SIZES_FULL = (8, 64, 256, 1024, 4000)
SIZES_QUICK = (8, 64)
CYCLES = 5
TTL = 600
"""Long enough that no holder renews during a run at N = 4,000."""


@final
class HoldersScale(Scenario):
    name: ClassVar[str] = "holders_scale"
    number: ClassVar[str] = "8"
    title: ClassVar[str] = "One Semaphore, N concurrent holders (cost vs N)"
    rows: ClassVar[tuple[Row, ...]] = tuple(
        row
        for n in SIZES_FULL
        for row in (
            Row(f"N={n}: fill, grants per second", f"n{n}.fill_grants_per_s"),
            Row(
                f"N={n}: one more acquire + release, p50",
                f"n{n}.cycle_ms.p50",
                f"n{n}.patch_ms.p50",
                "raw PATCH on the same object, p50",
            ),
            Row(
                f"N={n}: the apiserver's own time per grant or release write",
                f"n{n}.server_write_ms",
                f"n{n}.server_patch_ms",
                "its time per raw PATCH",
            ),
            Row(f"N={n}: object size", f"n{n}.object_kib"),
            Row(f"N={n}: release all N", f"n{n}.release_all_s"),
        )
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 1)
    repeat_cap_s: ClassVar[tuple[float, float]] = (120.0, 900.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        return await per_size(
            ctx, SIZES_FULL, SIZES_QUICK, lambda m, n: self._one(ctx, m, n, repeat)
        )

    async def _one(self, ctx: Context, m: Measurement, n: int, repeat: int) -> None:
        from konductor_sdk.semaphore import Semaphore

        name = f"holders-{n}-{repeat}-{secrets.token_hex(2)}"
        client = await ctx.client(f"holders-{n}")
        semaphore = Semaphore(name, permits=n + 1, client=client)
        await semaphore.create(permits=n + 1)
        await client.watch(SEMAPHORE, client.namespace)
        held: list[Permit] = []

        async def take() -> None:
            held.append(await semaphore.acquire(ttl=TTL))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(take)
        filled = time.monotonic() - started
        await (await semaphore.acquire()).release()  # warm: the last permit's first write

        before = await ctx.request_seconds("semaphores")
        cycles = await cycle_round_trips(semaphore, CYCLES)
        middle = await ctx.request_seconds("semaphores")
        patches = await patch_round_trips(client, SEMAPHORE, name, CYCLES)
        after = await ctx.request_seconds("semaphores")
        obj = await client.store.get(SEMAPHORE, client.namespace, name)
        grants = len(obj.status.get("holders") or {})
        if grants != n:
            raise RuntimeError(f"N={n}: the object lists {grants} grants, not {n}")

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for permit in held:
                tg.start_soon(permit.release)
        released = time.monotonic() - started

        prefix = f"n{n}"
        m.add(f"{prefix}.fill_s", filled, "s")
        m.add(f"{prefix}.fill_grants_per_s", n / filled if filled else math.nan, "grants/s")
        m.add_series(f"{prefix}.cycle_ms", cycles)
        m.add_series(f"{prefix}.patch_ms", patches)
        m.add(f"{prefix}.server_write_ms", mean_ms(before, middle, "PATCH/status"), "ms")
        m.add(f"{prefix}.server_patch_ms", mean_ms(middle, after, "PATCH"), "ms")
        m.add(f"{prefix}.object_kib", len(json.dumps(obj.raw)) / 1024, "KiB")
        m.add(f"{prefix}.release_all_s", released, "s")


SCENARIO = HoldersScale()

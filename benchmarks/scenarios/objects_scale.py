"""Scenario 9: N Semaphores in one namespace — what the others cost one user of one of them.

A process watches each kind it uses once per namespace (one shared watch, synced by a
list), so the number of other objects of that kind in the namespace is a cost it pays:
once, when its first acquire lists them, and per event afterwards. For N = 8 ... 10,000
idle Semaphores in a namespace of their own, per repeat and per N:

* **first acquire + release** of one of them by a fresh client (a new connection, its
  session, the list and watch of the kind, the two writes);
* the **steady** acquire + release after it, 20 times (p50);
* the apiserver's own time for that first list, all its pages (``LIST`` of semaphores,
  its ``/metrics``).

The others are idle: a busy neighbour's events would reach the process too, one decoded
event per write (scenario 7 gives the watch bytes a grant costs a process).
"""

from __future__ import annotations

import secrets
from typing import ClassVar, final

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import SEMAPHORE, ResourceKind

from .._harness import Context, Scenario, cycle_round_trips, per_size, spent_ms
from .._report import Measurement, Row

SIZES_FULL = (8, 1000, 10000)
SIZES_QUICK = (8, 100)
CYCLES = 20
CREATES_IN_FLIGHT = 16


@final
class ObjectsScale(Scenario):
    name: ClassVar[str] = "objects_scale"
    number: ClassVar[str] = "9"
    title: ClassVar[str] = "N Semaphores in one namespace: one user of one of them (cost vs N)"
    rows: ClassVar[tuple[Row, ...]] = tuple(
        row
        for n in SIZES_FULL
        for row in (
            Row(f"N={n}: a fresh client's first acquire + release", f"n{n}.first_ms"),
            Row(f"N={n}: the apiserver's time for that list, all pages", f"n{n}.server_list_ms"),
            Row(f"N={n}: list requests (pages)", f"n{n}.list_requests"),
            Row(f"N={n}: acquire + release after it, p50", f"n{n}.cycle_ms.p50"),
        )
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 1)
    repeat_cap_s: ClassVar[tuple[float, float]] = (120.0, 600.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        return await per_size(ctx, SIZES_FULL, SIZES_QUICK, lambda m, n: self._one(ctx, m, n))

    async def _one(self, ctx: Context, m: Measurement, n: int) -> None:
        from konductor_sdk.semaphore import Semaphore

        namespace = await ctx.new_namespace(f"objects-{n}")
        admin = await ctx.client("objects-admin", namespace=namespace)
        limit = anyio.Semaphore(CREATES_IN_FLIGHT)

        async def create(index: int) -> None:
            body = {"metadata": {"name": f"pool-{index}"}, "spec": {"permits": 4}}
            async with limit:
                await admin.store.create(SEMAPHORE, namespace, body)

        async with anyio.create_task_group() as tg:
            for index in range(n):
                tg.start_soon(create, index)

        identity = Identity(holder=f"objects-{n}-{secrets.token_hex(2)}")
        before = await ctx.request_seconds("semaphores")
        async with Client(kubeconfig=ctx.kubeconfig, namespace=namespace, identity=identity) as c:
            semaphore = Semaphore("pool-0", client=c)
            (first,) = await cycle_round_trips(semaphore, 1)
            after = await ctx.request_seconds("semaphores")
            cycles = await cycle_round_trips(semaphore, CYCLES)
        prefix = f"n{n}"
        m.add(f"{prefix}.first_ms", first, "ms")
        listed_ms, lists = spent_ms(before, after, "LIST")
        m.add(f"{prefix}.server_list_ms", listed_ms, "ms")
        m.add(f"{prefix}.list_requests", lists, "requests")
        m.add_series(f"{prefix}.cycle_ms", cycles)


SCENARIO = ObjectsScale()

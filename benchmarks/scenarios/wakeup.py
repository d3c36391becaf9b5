"""Scenario 5: wake-up latency, release → the next waiter running.

Two clients (own HTTP sessions and watches, as two processes would have) take turns on a
one-permit Semaphore: one holds, the other is queued (the harness waits until the queue —
the semaphore's claims — shows it), then the holder releases and the waiter's
``acquire()`` returns. The latency is from the call to ``release()`` to the waiter's code
running after ``acquire()``: the release, seen through the waiter's watch, then the
waiter's own granting write (in v2 only a waiter writes its grant). The floor: one write
seen through the other's watch, measured in the same repeat on the same object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, final

import anyio

from konductor_sdk import Client
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, KObject, ResourceKind

from .._baselines import watch_latencies
from .._harness import Context, Scenario
from .._report import Measurement, Row

NAME = "wakeup"
CHUNK = 10


async def wait_until(client: Client, predicate: Callable[[KObject | None], bool]) -> None:
    """Until ``client``'s watch cache of the semaphore satisfies ``predicate`` (bounded)."""
    watch = await client.watch(SEMAPHORE, client.namespace)
    with anyio.fail_after(10):
        while True:
            changed = watch.next_change(NAME)
            if predicate(watch.get(NAME)):
                return
            await changed.wait()


async def wait_queued(client: Client) -> None:
    """Until the semaphore's queue (its claims, in ``client``'s watch) is not empty."""
    async with client._watching(
        CLAIM, client.namespace, field_selector=target_selector(SEMAPHORE, NAME)
    ) as watch:
        with anyio.fail_after(10):
            while True:
                changed = watch.next_any_change()
                if any(not c.deleting for c in watch.objects()):
                    return
                await changed.wait()


@final
class Wakeup(Scenario):
    name: ClassVar[str] = "wakeup"
    number: ClassVar[str] = "5"
    title: ClassVar[str] = "Wake-up latency: release → next waiter running"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("release → waiter running p50", "wakeup_ms.p50", "watch_ms.p50", "write → watch p50"),
        Row("release → waiter running p99", "wakeup_ms.p99", "watch_ms.p99", "write → watch p99"),
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    repeat_cap_s: ClassVar[tuple[float, float]] = (60.0, 120.0)

    async def setup(self, ctx: Context) -> None:
        from konductor_sdk.semaphore import Semaphore

        self.clients = [await ctx.client("wakeup-a"), await ctx.client("wakeup-b")]
        self.semaphores: list[Any] = [Semaphore(NAME, permits=1, client=c) for c in self.clients]
        await self.semaphores[0].create(permits=1)
        for client in self.clients:
            await client.watch(SEMAPHORE, client.namespace)
        await self._turns(4)  # warm-up

    async def _turns(self, count: int) -> list[float]:
        samples = []
        for i in range(count):
            holder, waiter = (0, 1) if i % 2 == 0 else (1, 0)
            permit = await self.semaphores[holder].acquire()
            running_at = 0.0

            async def wait_turn(index: int) -> None:
                nonlocal running_at
                granted = await self.semaphores[index].acquire()
                running_at = time.perf_counter()
                await granted.release()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_turn, waiter)
                await wait_queued(self.clients[holder])
                released_at = time.perf_counter()
                await permit.release()
            samples.append((running_at - released_at) * 1000)
        return samples

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        chunks = ctx.size(full=6, quick=2)
        watch_ms: list[float] = []
        wakeup_ms: list[float] = []
        # Alternate chunks of baseline and wake-ups, so both see the same moments of a
        # machine that others share.
        for _ in range(chunks):
            watch_ms += await watch_latencies(
                self.clients[0], self.clients[1], SEMAPHORE, NAME, CHUNK
            )
            await self._caught_up()
            wakeup_ms += await self._turns(CHUNK)
        m = Measurement()
        m.add_series("watch_ms", watch_ms)
        m.add_series("wakeup_ms", wakeup_ms)
        return m

    async def _caught_up(self) -> None:
        """Both watches have the baseline's last write before the next CAS reads them."""
        latest = await self.clients[0].store.get(SEMAPHORE, self.clients[0].namespace, NAME)
        for client in self.clients:
            await wait_until(
                client,
                lambda obj: (
                    obj is not None and int(obj.resource_version) >= int(latest.resource_version)
                ),
            )


SCENARIO = Wakeup()

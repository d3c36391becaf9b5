"""Scenario 6: 1,000 waiters in one process — watch connections and memory.

Runs in a fresh child process so that its resident set size (``VmRSS``) says something.
The child first measures the floor — the same number of plain anyio tasks waiting on an
``anyio.Event`` — then parks that many ``acquire()`` calls on a one-permit Semaphore held
by another client, waits until the object shows them all queued, and records the RSS
growth, the watch connections the waiting client opened, and the requests it took to
enqueue. With every waiter queued it then watches one renewal window: the waiters' TTL is
short (``RENEW_TTL``, so a renewal is due every second) and the patches the waiting client
sends in 3.5 renewal periods are counted — each waiter renews its own entry, but entries
of one client due together go in one patch, so the floor is one patch per round, not one
per waiter — and whether every waiter is still queued after it. Then it cancels every
waiter and records how long until the queue is empty again (each cancelled waiter
withdraws its own entry).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, final

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import SEMAPHORE, ResourceKind

from .._child import Link
from .._harness import Context, Scenario, request_counts
from .._report import Measurement, Row

NAME = "many-waiters"
RENEW_TTL = 3
"""The waiters' ttlSeconds: a renewal is due every ``RENEW_TTL / 3`` = 1 s."""
RENEW_ROUNDS = 3.5


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _queue_until(client: Client, done: Callable[[int], bool]) -> None:
    """Until ``done(queue length)`` holds in ``client``'s watch cache."""
    watch = await client.watch(SEMAPHORE, client.namespace)
    while True:
        changed = watch.next_change(NAME)
        obj = watch.get(NAME)
        if done(0 if obj is None else len(obj.status.get("waiters") or {})):
            return
        await changed.wait()


async def child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """The measurement, in its own process (see the module docstring)."""
    from konductor_sdk.semaphore import Semaphore

    waiters = int(params["waiters"])
    bound = float(params["bound_s"])
    result: dict[str, Any] = {}

    # The floor: the same number of tasks, each waiting on an event.
    rss = rss_mib()
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(waiters):
            tg.start_soon(release.wait)
        await anyio.sleep(0.1)
        result["plain_tasks_rss_mib"] = rss_mib() - rss
        release.set()

    kubeconfig, namespace = params["kubeconfig"], params["namespace"]
    async with (
        Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("mw-holder")) as h,
        Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("mw-waiters")) as w,
    ):
        holder = Semaphore(NAME, permits=1, client=h)
        await holder.create(permits=1)
        permit = await holder.acquire()
        waiting = Semaphore(NAME, permits=1, client=w, ttl=RENEW_TTL)
        rss = rss_mib()
        before = w.store.stats.copy()
        started = time.monotonic()
        failures: list[str] = []

        async def wait_one() -> None:
            try:
                granted = await waiting.acquire()
            except Exception as exc:  # recorded: a waiter that could not even queue
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            await granted.release()  # not expected: the permit is held throughout

        async with anyio.create_task_group() as tg:
            for _ in range(waiters):
                tg.start_soon(wait_one)
            with anyio.move_on_after(bound) as scope:
                await _queue_until(h, lambda n: n >= waiters - len(failures))
            result["all_queued"] = not scope.cancelled_caught
            result["enqueue_s"] = time.monotonic() - started
            result["waiters_rss_mib"] = rss_mib() - rss
            result["enqueue_requests"] = request_counts(before, w.store.stats)
            result["watch_connections"] = w.store.stats["watch_opened"]
            patches = w.store.stats["patch"]
            await anyio.sleep(RENEW_ROUNDS * RENEW_TTL / 3)
            result["renewal_patches_per_round"] = (w.store.stats["patch"] - patches) / RENEW_ROUNDS
            queued = h.cached_watch(SEMAPHORE, namespace)
            obj = queued.get(NAME) if queued is not None else None
            result["queued_after_renewals"] = len(obj.status.get("waiters") or {}) if obj else 0
            cancelled_at = time.monotonic()
            tg.cancel_scope.cancel()
        with anyio.move_on_after(bound) as scope:
            await _queue_until(h, lambda n: n == 0)
        result["queue_empty_after_cancel"] = not scope.cancelled_caught
        result["cancel_all_s"] = time.monotonic() - cancelled_at
        result["failures"] = len(failures)
        result["failure_examples"] = sorted(set(failures))[:3]
        await permit.release()
    return result


@final
class ManyWaiters(Scenario):
    name: ClassVar[str] = "many_waiters"
    number: ClassVar[str] = "6"
    title: ClassVar[str] = "1,000 waiters in one process"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("watch connections opened", "watch_connections"),
        Row("RSS growth", "waiters_rss_mib", "plain_tasks_rss_mib", "as many anyio tasks"),
        Row("time until all are queued", "enqueue_s"),
        Row("API writes per waiter (enqueue)", "per_waiter.writes"),
        Row("409s per waiter (enqueue)", "per_waiter.conflicts"),
        Row(
            "renewal patches per 1 s round, all 1,000 waiters (uncombined: 1,000)",
            "renewal_patches_per_round",
        ),
        Row("waiters still queued after 3.5 renewal rounds", "queued_after_renewals"),
        Row("cancel all → queue empty", "cancel_all_s"),
        Row("waiters that failed to queue", "failures"),
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    repeat_cap_s: ClassVar[tuple[float, float]] = (150.0, 200.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        waiters = ctx.size(full=1000, quick=1000)
        namespace = await ctx.new_namespace("bench-many-waiters")
        params = {"waiters": waiters, "bound_s": 60.0, "namespace": namespace}
        child_process = await ctx.spawn(f"{__name__}:child", params, name=f"r{repeat}")
        r = await child_process.expect("result")
        m = Measurement()
        m.add("waiters", waiters, "waiters")
        m.add("watch_connections", r["watch_connections"], "connections")
        m.add("waiters_rss_mib", r["waiters_rss_mib"], "MiB")
        m.add("plain_tasks_rss_mib", r["plain_tasks_rss_mib"], "MiB")
        m.add("enqueue_s", r["enqueue_s"], "s")
        m.add("cancel_all_s", r["cancel_all_s"], "s")
        m.add("failures", r["failures"], "waiters")
        m.add("renewal_patches_per_round", r["renewal_patches_per_round"], "patches")
        m.add("queued_after_renewals", r["queued_after_renewals"], "waiters")
        m.add_counts("per_waiter", r["enqueue_requests"], waiters, "requests")
        if not r["all_queued"]:
            m.notes.append("not every waiter was queued within the bound")
        if not r["queue_empty_after_cancel"]:
            m.notes.append("cancelled waiters were still queued at the bound (left to TTL)")
        m.notes += [f"failure: {e}" for e in r["failure_examples"]]
        return m


SCENARIO = ManyWaiters()

"""Scenario 6: 1,000 waiters in one process — watch connections and memory.

Runs in a fresh child process so that its resident set size (``VmRSS``) says something.
The child first measures the floor — the same number of plain anyio tasks waiting on an
``anyio.Event`` — then parks that many ``acquire()`` calls on a one-permit Semaphore held
by another client, waits until the front's statistics count them all queued (each one's
claim created), records the RSS growth per waiter, then checks that the queue (the
semaphore's claims, listed) shows them all; and records the watch connections the waiting
client opened, and the requests it took to enqueue (one claim each). Nothing is listed
before the RSS reading: the measured process would keep the decoded lists' memory (the
allocator does not give it back), up to ~10 KiB per waiter with 1,000 claims listed every
0.2 s, which the figures measured before (listing until all were queued) included.

With every waiter queued it then watches 3.5 renewal periods: liveness is the client's one
session (``RENEW_TTL``, renewed every 3 s), not a renewal per waiter, so the floor is one
patch per round whatever the crowd; and whether every waiter is still queued after it.
Then it cancels every waiter and records how long until the queue is empty again (each
cancelled waiter deletes its claim).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, final

import anyio

from konductor_sdk import Client, Identity, WouldBlock
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, ResourceKind

from .._child import Link
from .._harness import Context, Scenario, request_counts
from .._report import Measurement, Row

if TYPE_CHECKING:
    from konductor_sdk.semaphore import Semaphore

NAME = "many-waiters"
RENEW_TTL = 9
"""The waiters' session TTL: a renewal of the session is due every ``RENEW_TTL / 3`` = 3 s."""
RENEW_ROUNDS = 3.5


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _waiting_until(sem: Semaphore, done: Callable[[int], bool]) -> None:
    """Until ``done(acquisitions queued)``, from the front's statistics (no request)."""
    while True:
        if done(sem.statistics().waiting):
            return
        await anyio.sleep(0.2)


async def _queue_until(client: Client, done: Callable[[int], bool]) -> int:
    """Until ``done(queue length)`` holds, reading the claims with a LIST every 0.2 s (not
    a watch: a second cached copy of every claim in this process would be measured too)."""
    while True:
        listed = await client.store.list(
            CLAIM, client.namespace, field_selector=target_selector(SEMAPHORE, NAME)
        )
        length = len(listed.items)
        del listed
        if done(length):
            return length
        await anyio.sleep(0.2)


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
        result["plain_tasks_rss_kib_each"] = result["plain_tasks_rss_mib"] * 1024 / waiters
        release.set()

    kubeconfig, namespace = params["kubeconfig"], params["namespace"]
    # Only the waiting client lives here (the permit is held by the parent process), so
    # the RSS growth is the waiters' own.
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("mw-waiters")
    ) as w:
        waiting = Semaphore(NAME, client=w, ttl=RENEW_TTL)
        # Warm up what is per client, not per waiter: connection, watches, session.
        with contextlib.suppress(WouldBlock):
            await (await waiting.acquire_nowait()).release()
        gc.collect()
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
                await _waiting_until(waiting, lambda n: n >= waiters - len(failures))
            result["enqueue_s"] = time.monotonic() - started
            gc.collect()
            result["waiters_rss_mib"] = rss_mib() - rss
            result["waiters_rss_kib_each"] = result["waiters_rss_mib"] * 1024 / waiters
            result["enqueue_requests"] = request_counts(before, w.store.stats)
            with anyio.move_on_after(bound) as listed:
                await _queue_until(w, lambda n: n >= waiters - len(failures))
            result["all_queued"] = not (scope.cancelled_caught or listed.cancelled_caught)
            result["watch_connections"] = w.store.stats["watch_opened"]
            patches = w.store.stats["patch"]
            await anyio.sleep(RENEW_ROUNDS * RENEW_TTL / 3)
            result["renewal_patches_per_round"] = (w.store.stats["patch"] - patches) / RENEW_ROUNDS
            result["queued_after_renewals"] = await _queue_until(w, lambda n: True)
            cancelled_at = time.monotonic()
            tg.cancel_scope.cancel()
        with anyio.move_on_after(bound) as scope:
            await _queue_until(w, lambda n: n == 0)
        result["queue_empty_after_cancel"] = not scope.cancelled_caught
        result["cancel_all_s"] = time.monotonic() - cancelled_at
        result["failures"] = len(failures)
        result["failure_examples"] = sorted(set(failures))[:3]
    return result


@final
class ManyWaiters(Scenario):
    name: ClassVar[str] = "many_waiters"
    number: ClassVar[str] = "6"
    title: ClassVar[str] = "1,000 waiters in one process"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("watch connections opened", "watch_connections"),
        Row("RSS growth", "waiters_rss_mib", "plain_tasks_rss_mib", "as many anyio tasks"),
        Row(
            "RSS per waiter (target <= 8 KiB)",
            "waiters_rss_kib_each",
            "plain_tasks_rss_kib_each",
            "per plain anyio task",
        ),
        Row("time until all are queued", "enqueue_s"),
        Row("API writes per waiter (enqueue)", "per_waiter.writes"),
        Row("409s per waiter (enqueue)", "per_waiter.conflicts"),
        Row(
            "renewal patches per 3 s round, all 1,000 waiters (one session: floor 1)",
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
        from konductor_sdk.semaphore import Semaphore

        waiters = ctx.size(full=1000, quick=1000)
        namespace = await ctx.new_namespace("bench-many-waiters")
        holder = Semaphore(NAME, permits=1, client=await ctx.client("mw-holder", namespace))
        await holder.create(permits=1)
        permit = await holder.acquire()
        params = {"waiters": waiters, "bound_s": 120.0, "namespace": namespace}
        child_process = await ctx.spawn(f"{__name__}:child", params, name=f"r{repeat}")
        r = await child_process.expect("result")
        await permit.release()
        m = Measurement()
        m.add("waiters", waiters, "waiters")
        m.add("watch_connections", r["watch_connections"], "connections")
        m.add("waiters_rss_mib", r["waiters_rss_mib"], "MiB")
        m.add("plain_tasks_rss_mib", r["plain_tasks_rss_mib"], "MiB")
        m.add("waiters_rss_kib_each", r["waiters_rss_kib_each"], "KiB")
        m.add("plain_tasks_rss_kib_each", r["plain_tasks_rss_kib_each"], "KiB")
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

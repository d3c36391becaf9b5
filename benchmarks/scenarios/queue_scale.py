"""Scenario 7: what a grant costs as the queue grows (issue 12).

**Cost vs N.** One process, a Semaphore with ``permits=4``, N tasks looping acquire →
release with no hold, for N = 8 … 10,000 (a fresh child process and namespace per N). Once
every task is queued, a window counts grants, the bytes the process received on its watch
streams, its requests, and the apiserver's own answers by code (``/metrics``): a grant
whose cost did not depend on the queue gives flat figures and a grants/s ratio near 1.

**Order at scale.** 10,000 waiters from 8 processes queue on one semaphore (random
priorities 0-3) while the harness holds every permit; then it releases and each waiter
takes one grant and gives it back. An observer of its own (raw watches of the claims and
of the object) checks every grant against the fairness rule: it must be in the fitting
prefix of the queue ordered by priority, then arrival.
"""

from __future__ import annotations

import bisect
import random
import time
from collections import Counter
from typing import Any, ClassVar, final

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.claims import order_key, target_selector
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, KObject, ResourceKind

from .._child import Link, rusage_cpu_seconds
from .._harness import Context, Scenario, counter_delta, request_counts
from .._report import Measurement, Row

NAME = "scale"
PERMITS = 4
FULL = (8, 64, 256, 1024, 10_000)
QUICK = (8, 64, 256)
PROCESSES = 8


def _rows() -> tuple[Row, ...]:
    rows = []
    for n in FULL:
        rows.append(
            Row(f"N={n:,}: grants/s", f"n{n}.grants_per_s", "n8.grants_per_s", "N=8 grants/s")
        )
        rows.append(Row(f"N={n:,}: watch KiB received per grant", f"n{n}.watch_kib_per_grant"))
        rows.append(Row(f"N={n:,}: API writes per grant", f"n{n}.per_grant.writes"))
        rows.append(
            Row(
                f"N={n:,}: CPU ms per grant, this process",
                f"n{n}.client_cpu_ms_per_grant",
                f"n{n}.server_cpu_ms_per_grant",
                "apiserver + etcd",
            )
        )
        rows.append(Row(f"N={n:,}: 409s + 422s per grant (apiserver)", f"n{n}.refused_per_grant"))
        rows.append(Row(f"N={n:,}: time until all queued", f"n{n}.enqueue_s"))
    rows += [
        Row("order: waiters granted", "order.granted", "order.waiters", "waiters"),
        Row("order: grants outside the fitting prefix", "order.violations"),
        Row("order: errors", "order.errors"),
        Row("order: grants/s", "order.grants_per_s"),
        Row("order: time until all queued", "order.enqueue_s"),
    ]
    return tuple(rows)


async def _wait_all_queued(client: Client, n: int, bound: float, holder: str | None = None) -> bool:
    """Until ``n`` claims of the semaphore (of ``holder``, if given) are in ``client``'s
    claim watch."""
    async with client._watching(
        CLAIM, client.namespace, field_selector=target_selector(SEMAPHORE, NAME)
    ) as watch:
        with anyio.move_on_after(bound):
            while True:
                changed = watch.next_any_change()
                claims = watch.objects()
                if holder is not None:
                    claims = [c for c in claims if c.spec.get("holder") == holder]
                if len(claims) >= n:
                    return True
                await changed.wait()
    return False


async def loop_child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """N tasks looping acquire → release on one client (see the module docstring)."""
    from konductor_sdk.semaphore import Semaphore

    n, seconds, bound = int(params["n"]), float(params["seconds"]), float(params["bound_s"])
    identity = Identity(f"scale-{n}")
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        sem = Semaphore(NAME, client=client, ttl=300)
        counting = [False]
        grants = [0]
        errors: list[str] = []

        async def loop() -> None:
            while True:
                try:
                    permit = await sem.acquire()
                except Exception as exc:  # recorded: waiting must never fail
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                with anyio.CancelScope(shield=True):
                    await permit.release()
                if counting[0]:
                    grants[0] += 1

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(loop)
            queued = await _wait_all_queued(client, n - PERMITS, bound)
            enqueue_s = time.monotonic() - started
            await anyio.sleep(min(5.0, seconds / 2))  # warm-up: the loop is in its stride
            before = client.store.stats.copy()
            cpu = rusage_cpu_seconds()
            await link.send("opened")
            counting[0] = True
            await anyio.sleep(seconds)
            counting[0] = False
            cpu = rusage_cpu_seconds() - cpu
            after = client.store.stats.copy()
            await link.send("closed")
            done = grants[0]
            tg.cancel_scope.cancel()
        delta = Counter(after)
        delta.subtract(before)
        return {
            "grants": done,
            "seconds": seconds,
            "queued": queued,
            "enqueue_s": enqueue_s,
            "requests": request_counts(before, after),
            "watch_bytes": delta["watch_bytes"],
            "window_cpu_s": cpu,
            "errors": len(errors),
            "error_examples": sorted(set(errors))[:3],
        }


async def ordered_child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """``n`` waiters of random priority; each takes one grant and gives it back."""
    from konductor_sdk.semaphore import Semaphore

    n, rng = int(params["n"]), random.Random(int(params["seed"]))
    identity = Identity(f"order-{params['seed']}")
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        sem = Semaphore(NAME, client=client, ttl=600)
        granted: list[int] = []
        errors: list[str] = []

        async def one(priority: int) -> None:
            try:
                permit = await sem.acquire(priority=priority)
            except Exception as exc:  # recorded: waiting must never fail
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            granted.append(permit.token)
            await permit.release()

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one, rng.choice((0, 1, 2, 3)))
            await _wait_all_queued(client, n, 1800.0, holder=identity.holder)
            await link.send("queued")
    return {"granted": len(granted), "errors": len(errors), "examples": sorted(set(errors))[:3]}


class OrderObserver:
    """Raw watches of the claims and of the object; checks every grant against the
    fairness rule (weight 1: a grant must be among the first ``free`` waiting claims)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.keys: dict[str, tuple[int, int, str]] = {}
        self.waiting: list[tuple[int, int, str]] = []
        self.granted: set[str] = set()
        self.violations = 0
        self.versions = 0
        self._added = anyio.Event()

    async def seen(self, n: int) -> None:
        """Until ``n`` claims were seen."""
        while len(self.keys) < n:
            await self._added.wait()

    async def claims(self, since: str) -> None:
        while True:  # resumed where it was if the server ends the stream
            async for event in self.client.store.watch(
                CLAIM,
                self.client.namespace,
                resource_version=since,
                field_selector=target_selector(SEMAPHORE, NAME),
            ):
                since = event.object.resource_version
                if event.type == "ADDED" and event.object.name not in self.keys:
                    key = order_key(event.object)
                    self.keys[event.object.name] = key
                    bisect.insort(self.waiting, key)
                    self._added.set()
                    self._added = anyio.Event()

    async def grants(self, since: str) -> None:
        while True:
            async for event in self.client.store.watch(
                SEMAPHORE, self.client.namespace, resource_version=since
            ):
                since = event.object.resource_version
                if event.type == "MODIFIED" and event.object.name == NAME:
                    self.check(event.object)

    def check(self, obj: KObject) -> None:
        self.versions += 1
        holders = obj.status.get("holders") or {}
        new = [e["claim"] for e in holders.values() if e.get("claim") not in self.granted]
        new = [c for c in new if c is not None]
        free = PERMITS - (len(holders) - len(new))
        for claim in new:
            key = self.keys.get(claim)
            if key is None:  # created before the observer's start: all are, but be total
                continue
            rank = bisect.bisect_left(self.waiting, key)
            if rank >= free:
                self.violations += 1
        for claim in new:
            self.granted.add(claim)
            key = self.keys.get(claim)
            if key is not None:
                i = bisect.bisect_left(self.waiting, key)
                if i < len(self.waiting) and self.waiting[i] == key:
                    del self.waiting[i]


@final
class QueueScale(Scenario):
    name: ClassVar[str] = "queue_scale"
    number: ClassVar[str] = "7"
    title: ClassVar[str] = "Cost of a grant vs queue length; order at 10,000 waiters"
    rows: ClassVar[tuple[Row, ...]] = _rows()
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE, CLAIM)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 1)
    repeat_cap_s: ClassVar[tuple[float, float]] = (600.0, 3600.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        from konductor_sdk.semaphore import Semaphore

        m = Measurement()
        seconds = ctx.seconds(full=20.0, quick=8.0)
        for n in QUICK if ctx.quick else FULL:
            namespace = await ctx.new_namespace(f"bench-scale-{n}")
            creator = await ctx.client(f"scale-creator-{n}", namespace=namespace)
            await Semaphore(NAME, client=creator).create(permits=PERMITS)
            params = {"n": n, "seconds": seconds, "bound_s": 900.0, "namespace": namespace}
            child = await ctx.spawn(f"{__name__}:loop_child", params, name=f"n{n}-r{repeat}")
            await child.expect("opened")
            before = await ctx.server_counters()
            before_cpu = sum(ctx.server_cpu().values())
            await child.expect("closed")
            after_cpu = sum(ctx.server_cpu().values())
            after = await ctx.server_counters()
            r = await child.expect("result")
            server = counter_delta(before, after)
            grants = max(r["grants"], 1)
            m.add(f"n{n}.grants_per_s", r["grants"] / r["seconds"], "grants/s")
            m.add(f"n{n}.watch_kib_per_grant", r["watch_bytes"] / grants / 1024, "KiB")
            m.add(f"n{n}.client_cpu_ms_per_grant", r["window_cpu_s"] / grants * 1000, "ms")
            m.add(f"n{n}.server_cpu_ms_per_grant", (after_cpu - before_cpu) / grants * 1000, "ms")
            m.add(f"n{n}.enqueue_s", r["enqueue_s"], "s")
            m.add(
                f"n{n}.refused_per_grant",
                (server.get("requests.409", 0) + server.get("requests.422", 0)) / grants,
                "refusals",
            )
            m.add_counts(f"n{n}.per_grant", r["requests"], grants)
            m.add(f"n{n}.errors", r["errors"], "errors")
            if not r["queued"]:
                m.notes.append(f"N={n}: not every waiter was queued within the bound")
            m.notes += [f"N={n} error: {e}" for e in r["error_examples"]]
        await self._order(ctx, m, ctx.size(full=10_000, quick=800), repeat)
        return m

    async def _order(self, ctx: Context, m: Measurement, total: int, repeat: int) -> None:
        from konductor_sdk.semaphore import Semaphore

        namespace = await ctx.new_namespace("bench-scale-order")
        harness = await ctx.client("scale-order-harness", namespace=namespace)
        sem = Semaphore(NAME, permits=PERMITS, client=harness)
        await sem.create()
        all_held = await sem.acquire(weight=PERMITS)
        start = await harness.store.get(SEMAPHORE, namespace, NAME)
        observer = OrderObserver(harness)
        per = total // PROCESSES
        results: list[dict[str, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(observer.claims, start.resource_version)
            tg.start_soon(observer.grants, start.resource_version)
            started = time.monotonic()
            children = [
                await ctx.spawn(
                    f"{__name__}:ordered_child",
                    {"n": per, "seed": i, "namespace": namespace},
                    name=f"order-{i}-r{repeat}",
                )
                for i in range(PROCESSES)
            ]
            for child in children:
                await child.expect("queued")
            with anyio.fail_after(600):  # the observer knows every claim before any grant
                await observer.seen(per * PROCESSES)
            m.add("order.enqueue_s", time.monotonic() - started, "s")
            released = time.monotonic()
            await all_held.release()
            for child in children:
                results.append(await child.expect("result"))
            elapsed = time.monotonic() - released
            tg.cancel_scope.cancel()
        granted = sum(r["granted"] for r in results)
        m.add("order.waiters", per * PROCESSES, "waiters")
        m.add("order.granted", granted, "waiters")
        m.add("order.errors", sum(r["errors"] for r in results), "errors")
        m.add("order.violations", observer.violations, "grants")
        m.add("order.grants_per_s", granted / elapsed, "grants/s")
        m.add("order.observed_claims", len(observer.keys), "claims")
        for r in results:
            m.notes += [f"order error: {e}" for e in r["examples"]]


SCENARIO = QueueScale()

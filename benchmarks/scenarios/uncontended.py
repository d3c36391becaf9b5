"""Scenario 1: uncontended acquire+release, against one raw PATCH on the same object.

One client, one Semaphore nobody else uses. Each repeat alternates chunks of raw PATCHes
(an annotation on the semaphore object itself, through the same client's store) with
chunks of ``acquire()`` + ``release()`` cycles, so both see the same moment of the machine.
The floor of a cycle is two writes (grant, release); the request counters show how many
the primitive really makes.

A third series isolates the primitive's own cost from the server's: the very two status
writes of a cycle (captured from the SDK, their tokens advanced), sent raw in a loop. What
the server does with a grant (the admission policy that checks who wrote it, the CRD's
rules) is in both; only the SDK's bookkeeping and hand-offs are not.

The apiserver's own time for those writes, from its ``/metrics``, is the last floor: what
a client that cost nothing would still see.

The same is measured for a second client, a user bound to the ``konductor-user`` role in
the namespace (as the SDK runs in a user's pod) on a semaphore of its own: the harness's
admin is in ``system:masters``, which the authorizer and the admission policies treat
differently (``override`` allowed), so its figures alone do not say what users see.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, final

import anyio
import attrs

from konductor_sdk import Client
from konductor_sdk._kernel.objects import SEMAPHORE, KObject, ResourceKind

from .._baselines import patch_round_trips
from .._harness import Context, Scenario, accumulate, cycle_round_trips, mean_ms, request_counts
from .._report import Measurement, Row

if TYPE_CHECKING:
    from konductor_sdk.semaphore import Semaphore

NAME = "uncontended"
USER_NAME = "uncontended-user"
CHUNK = 10


@final
class Uncontended(Scenario):
    name: ClassVar[str] = "uncontended"
    number: ClassVar[str] = "1"
    title: ClassVar[str] = "Uncontended acquire+release"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("cycle p50", "cycle_ms.p50", "patch_ms.p50", "raw PATCH p50"),
        Row(
            "cycle p50, against its own two writes sent raw",
            "cycle_ms.p50",
            "replay_ms.p50",
            "the same grant + release, raw, p50",
        ),
        Row(
            "the same grant + release sent raw, p50",
            "replay_ms.p50",
            "patch_ms.p50",
            "raw PATCH p50",
        ),
        Row(
            "the apiserver's own time for a cycle's two writes (mean)",
            "server.cycle_ms",
            "server.patch_ms",
            "its time for one raw PATCH (mean)",
        ),
        Row("cycle p99", "cycle_ms.p99", "patch_ms.p99", "raw PATCH p99"),
        Row("API writes per cycle", "per_cycle.writes", "per_patch.writes", "per raw PATCH"),
        Row("API reads per cycle", "per_cycle.reads"),
        Row("409 conflicts per cycle", "per_cycle.conflicts"),
        Row(
            "cycle p50, as a konductor-user",
            "user_cycle_ms.p50",
            "user_patch_ms.p50",
            "raw PATCH p50, same user",
        ),
        Row(
            "cycle p99, as a konductor-user",
            "user_cycle_ms.p99",
            "user_patch_ms.p99",
            "raw PATCH p99, same user",
        ),
        Row(
            "the same grant + release sent raw as a konductor-user, p50",
            "user_replay_ms.p50",
            "user_patch_ms.p50",
            "raw PATCH p50, same user",
        ),
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    repeat_cap_s: ClassVar[tuple[float, float]] = (60.0, 120.0)

    async def setup(self, ctx: Context) -> None:
        from konductor_sdk.semaphore import Semaphore

        self.cycles: dict[str, Cycle] = {}
        self.client = await ctx.client("uncontended")
        self.semaphore = Semaphore(NAME, permits=4, client=self.client)
        self.user = await ctx.user_client("uncontended-user")
        self.user_semaphore = Semaphore(USER_NAME, permits=4, client=self.user)
        for client, sem, name in (
            (self.client, self.semaphore, NAME),
            (self.user, self.user_semaphore, USER_NAME),
        ):
            await sem.create(permits=4)
            # The semaphore waits on the client's shared watch; open it now, not in cycle 1.
            await client.watch(SEMAPHORE, client.namespace)
            await cycle_round_trips(sem, CHUNK)  # warm-up: connection pool, first renewal task...
            self.cycles[name] = await captured_cycle(client, sem)
            await patch_round_trips(client, SEMAPHORE, name, CHUNK)
            await self._replays(client, name, CHUNK)

    async def _replays(self, client: Client, name: str, count: int) -> list[float]:
        return await replays(client, name, self.cycles[name], count)

    async def _caught_up(self, client: Client, name: str) -> None:
        # A raw PATCH bumps the resourceVersion; let the watch cache see it before the
        # next acquire, or the acquire's first CAS attempt would read a stale cache and
        # take a 409 that only this benchmark's interleaving causes.
        latest: KObject = await client.store.get(SEMAPHORE, client.namespace, name)
        watch = await client.watch(SEMAPHORE, client.namespace)
        with anyio.fail_after(10):
            while True:
                changed = watch.next_change(name)
                cached = watch.get(name)
                if cached is not None and cached.resource_version == latest.resource_version:
                    return
                await changed.wait()

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        chunks = ctx.size(full=20, quick=5)
        cycles: list[float] = []
        patches: list[float] = []
        user_cycles: list[float] = []
        user_patches: list[float] = []
        replays: list[float] = []
        user_replays: list[float] = []
        cycle_stats: dict[str, float] = {}
        patch_stats: dict[str, float] = {}
        server_before = await ctx.request_seconds("semaphores")
        for _ in range(chunks):
            before = self.client.store.stats.copy()
            patches += await patch_round_trips(self.client, SEMAPHORE, NAME, CHUNK)
            accumulate(patch_stats, request_counts(before, self.client.store.stats))
            await self._caught_up(self.client, NAME)
            before = self.client.store.stats.copy()
            cycles += await cycle_round_trips(self.semaphore, CHUNK)
            accumulate(cycle_stats, request_counts(before, self.client.store.stats))
            replays += await self._replays(self.client, NAME, CHUNK)
            await self._caught_up(self.client, NAME)
            user_patches += await patch_round_trips(self.user, SEMAPHORE, USER_NAME, CHUNK)
            await self._caught_up(self.user, USER_NAME)
            user_cycles += await cycle_round_trips(self.user_semaphore, CHUNK)
            user_replays += await self._replays(self.user, USER_NAME, CHUNK)
            await self._caught_up(self.user, USER_NAME)
        server_after = await ctx.request_seconds("semaphores")
        m = Measurement()
        # From the server's own clock: what no client, however cheap, can take away. The
        # status writes are the cycles' and their raw replays', the PATCHes the baselines'.
        status_write = mean_ms(server_before, server_after, "PATCH/status")
        m.add("server.cycle_ms", 2 * status_write, "ms")
        m.add("server.patch_ms", mean_ms(server_before, server_after, "PATCH"), "ms")
        m.add_series("user_cycle_ms", user_cycles)
        m.add_series("user_patch_ms", user_patches)
        m.add_series("cycle_ms", cycles)
        m.add_series("patch_ms", patches)
        m.add_series("replay_ms", replays)
        m.add_series("user_replay_ms", user_replays)
        m.add_counts("per_cycle", cycle_stats, len(cycles), "requests")
        m.add_counts("per_patch", patch_stats, len(patches), "requests")
        return m


@attrs.frozen
class Cycle:
    """The two status writes (JSON patches) of one acquire + release, as the SDK sent them."""

    grant: list[dict[str, Any]]
    release: list[dict[str, Any]]
    token: int
    """The object's fencing counter before the cycle."""


async def captured_cycle(client: Client, semaphore: Semaphore) -> Cycle:
    """One acquire + release of ``semaphore``, its two writes captured."""
    store = client.store
    before = await store.get(SEMAPHORE, client.namespace, semaphore.name)
    token = int(before.status.get("fencingToken", 0))
    captured: list[list[dict[str, Any]]] = []
    patch = store.patch

    async def capture(*args: Any, **kwargs: Any) -> KObject:
        captured.append(args[3])
        return await patch(*args, **kwargs)

    store.patch = capture  # type: ignore[method-assign]
    try:
        permit = await semaphore.acquire()
        await permit.release()
    finally:
        store.patch = patch  # type: ignore[method-assign]
    if len(captured) != 2:
        raise RuntimeError(f"an uncontended cycle made {len(captured)} PATCHes, not 2")
    return Cycle(captured[0], captured[1], token)


async def replay(
    client: Client, name: str, cycle: Cycle, current: KObject
) -> tuple[float, KObject]:
    """``cycle`` sent raw once more on semaphore ``name``, whose newest version is
    ``current``: the pair's round trip (ms) and the object after it."""
    delta = int(current.status.get("fencingToken", 0)) - cycle.token
    started = time.perf_counter()
    for ops in (cycle.grant, cycle.release):
        current = await client.store.patch(
            SEMAPHORE,
            client.namespace,
            name,
            _advanced(ops, delta, current),
            patch_type="json",
            subresource="status",
        )
    return (time.perf_counter() - started) * 1000, current


async def replays(client: Client, name: str, cycle: Cycle, count: int) -> list[float]:
    """``count`` raw grant + release pairs on semaphore ``name`` (ms per pair)."""
    obj = await client.store.get(SEMAPHORE, client.namespace, name)
    samples = []
    for _ in range(count):
        elapsed, obj = await replay(client, name, cycle, obj)
        samples.append(elapsed)
    return samples


def _advanced(ops: Sequence[dict[str, Any]], delta: int, current: KObject) -> list[dict[str, Any]]:
    """``ops`` with every fencing token ``delta`` later and the current resourceVersion."""
    out = []
    for op in ops:
        op = dict(op)
        path, value = op["path"], op.get("value")
        if path == "/metadata/resourceVersion":
            op["value"] = current.resource_version
        elif isinstance(value, int) and (path == "/status/fencingToken" or path.endswith("/token")):
            op["value"] = value + delta
        elif isinstance(value, dict) and "token" in value:
            op["value"] = {**value, "token": value["token"] + delta}
        out.append(op)
    return out


SCENARIO = Uncontended()

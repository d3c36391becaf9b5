"""Scenario 3: a Barrier with 4,096 parties from 8 processes — release vs one write's fan-out.

The parties live in child processes (8 full, 4 quick), each sharing one client (one HTTP
session, one watch) among its parties, plus the *last* party in the harness's own process.
Per round, every child's parties call ``wait()`` at once (a process's simultaneous
arrivals are combined into one CAS of the barrier's counters); once the harness's watch
shows all but one arrived, the last party calls ``wait()`` at ``t0``: its arrival write
opens the barrier, and every other party learns it from one watch event. Each party
records when its ``wait()`` returned. Figures: the release latency ``release - t0`` of
every party (p50/p99 pooled over all parties and rounds) and of the last one released; the
time the other arrivals took; requests and 409s per party; the size of the barrier object.
Rounds reuse the barrier (it is cyclic).

Baseline, same object, same clients, every round: the harness PATCHes an annotation on
the barrier and each process reports when its watch cache had it; ``(last seen) - sent``
is the floor "one write reaching every process's watch" (the issue's target: p99 release
<= 1.5x that).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from typing import Any, ClassVar, final

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import BARRIER, KObject, ResourceKind

from .._baselines import annotation, next_value, patch_annotation
from .._child import Child, Link
from .._harness import Context, Scenario, request_counts
from .._report import Measurement, Row

NAME = "parties"
FANOUT_SAMPLES = 3
"""Floor samples per round (one annotation PATCH each)."""
SETTLE_S = 0.3
"""Pause between the others' arrivals and the last one (as a last rank arrives later):
the processes' own background work after arriving (claims) is not what is measured."""


async def until(client: Client, name: str, done: Any) -> KObject:
    watch = await client.watch(BARRIER, client.namespace)
    while True:
        changed = watch.next_change(name)
        obj = watch.get(name)
        if obj is not None and done(obj):
            return obj
        await changed.wait()


def stats_since(client: Client, before: Counter[str]) -> dict[str, int]:
    delta = Counter(client.store.stats)
    delta.subtract(before)
    return dict(delta)


def object_bytes(obj: KObject) -> int:
    """The object's size as JSON (what every watching process decodes per change)."""
    return len(json.dumps(obj.raw, separators=(",", ":")))


async def barrier_child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """A process whose parties share one client; rounds on command.

    ``round``: parties ``names`` arrive at barrier ``name`` (created with ``expected``),
    reply ``arrived`` once all their ``arrive()`` returned, then wait for it to open and
    reply ``released`` with each party's release time and the requests made.
    ``watch``: reply ``seen`` when the barrier ``name`` carries annotation ``value``.
    """
    from konductor_sdk.barrier import Barrier

    index = params["index"]
    identity = Identity(holder=f"barrier-{index}")
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        await client.watch(BARRIER, client.namespace)
        await link.send("ready")
        while True:
            command = await link.receive()
            before = client.store.stats.copy()
            if command["op"] == "stop":
                return {}
            if command["op"] == "watch":
                value = command["value"]
                tasks = int(command.get("tasks", 0))
                woken: list[float] = []
                seen = anyio.Event()
                async with anyio.create_task_group() as tg:
                    for _ in range(tasks):
                        tg.start_soon(_woken, seen, woken)
                    await link.send("watching")
                    await until(client, command["name"], lambda obj, v=value: annotation(obj) == v)
                    t = time.monotonic()
                    seen.set()
                await link.send("seen", t=t, woken=woken)
            elif command["op"] == "round":
                barriers = [
                    Barrier(command["name"], expected=command["expected"], client=client, party=p)
                    for p in command["names"]
                ]
                releases: list[float] = []
                async with anyio.create_task_group() as tg:
                    for barrier in barriers:
                        tg.start_soon(barrier.arrive)
                await link.send("arrived")
                async with anyio.create_task_group() as tg:
                    for barrier in barriers:
                        tg.start_soon(_wait_open, barrier, releases)
                await link.send("released", releases=releases, stats=stats_since(client, before))
            else:
                raise ValueError(f"unknown command {command!r}")


async def _woken(seen: anyio.Event, woken: list[float]) -> None:
    await seen.wait()
    woken.append(time.monotonic())


async def _wait_open(barrier: Any, releases: list[float]) -> None:
    await barrier.wait_open()
    releases.append(time.monotonic())


async def spawn_children(ctx: Context, processes: int) -> list[Child]:
    children: list[Child] = []

    async def spawn(index: int) -> None:
        child = await ctx.spawn(f"{__name__}:barrier_child", {"index": index}, name=f"p{index}")
        await child.expect("ready")
        children.append(child)

    async with anyio.create_task_group() as tg:
        for index in range(processes):
            tg.start_soon(spawn, index)
    return sorted(children, key=lambda c: c.name)


def shares(total: int, processes: int) -> list[int]:
    """``total`` parties spread over ``processes`` as evenly as possible."""
    base, extra = divmod(total, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


async def one_round(
    client: Client,
    children: list[Child],
    *,
    name: str,
    expected: int,
) -> dict[str, Any]:
    """One generation: the children's parties (all but one) arrive, and once every one of
    them is waiting (its ``arrive()`` returned: its arrival counted and its claim written)
    the harness's last party arrives at ``t0``. Returns the release times relative to
    ``t0`` (ms), the arrival time (s), the requests of every process, and the object at
    the opening."""
    from konductor_sdk.barrier import Barrier

    before = client.store.stats.copy()
    generation = await _generation(client, name) + 1
    started = time.monotonic()
    for child, count in zip(children, shares(expected - 1, len(children)), strict=True):
        names = [f"{child.name}-{i}" for i in range(count)]
        await child.send(op="round", name=name, expected=expected, names=names)

    for child in children:
        await child.expect("arrived")

    def all_but_one(obj: KObject) -> bool:
        s = obj.status
        return s.get("generation") == generation and s.get("arrived", 0) >= expected - 1

    if expected > 1:
        await until(client, name, all_but_one)  # this process's watch has seen them too
    arrived = time.monotonic()
    await anyio.sleep(SETTLE_S)
    t0 = time.monotonic()
    last = Barrier(name, expected=expected, client=client, party="last")
    await last.wait()
    releases = [time.monotonic()]
    told = [releases[0]]  # when each process learned it: its first party returned
    stats: Counter[str] = Counter()
    for child in children:
        message = await child.expect("released")
        releases += message["releases"]
        if message["releases"]:
            told.append(min(message["releases"]))
        stats.update(message["stats"])
    stats.update(stats_since(client, before))
    opened = await until(client, name, lambda o: o.status.get("generation", 0) >= generation)
    return {
        "release_ms": [(r - t0) * 1000 for r in releases],
        "told_ms": [(r - t0) * 1000 for r in told],
        "arrive_s": arrived - started,
        "stats": stats,
        "bytes": object_bytes(opened),
    }


async def _generation(client: Client, name: str) -> int:
    obj = (await client.watch(BARRIER, client.namespace)).get(name)
    return 0 if obj is None else int(obj.status.get("generation") or 0)


async def fanout(
    client: Client, children: list[Child], name: str, tasks: list[int] | None = None
) -> tuple[float, list[float]]:
    """One annotation PATCH → the last process whose watch has it (ms); and, with
    ``tasks`` (per child), when each of that many tasks waiting in the child on an event
    set by its watch resumed (ms after the PATCH was sent): what releasing that many
    parties costs a Python process with no barrier at all."""
    value = next_value()
    for index, child in enumerate(children):
        await child.send(op="watch", name=name, value=value, tasks=tasks[index] if tasks else 0)
    for child in children:
        await child.expect("watching")
    sent = time.monotonic()
    await patch_annotation(client, BARRIER, name, value)
    seen: list[float] = []
    woken: list[float] = []
    for child in children:
        message = await child.expect("seen")
        seen.append(float(message["t"]))
        woken += [(float(t) - sent) * 1000 for t in message["woken"]]
    await until(client, name, lambda obj: annotation(obj) == value)
    return (max(seen) - sent) * 1000, woken


@final
class BarrierScenario(Scenario):
    name: ClassVar[str] = "barrier"
    number: ClassVar[str] = "3"
    title: ClassVar[str] = "Barrier, 4,096 parties from 8 processes"
    rows: ClassVar[tuple[Row, ...]] = (
        Row(
            "last arrival → each process told (its first party returned), p99",
            "told_ms.pooled_p99",
            "fanout_ms.pooled_p99",
            "write → every process's watch, p99",
        ),
        Row(
            "last arrival → party released, p99 of all parties and rounds",
            "release_ms.pooled_p99",
            "fanout_ms.pooled_p99",
            "write → every process's watch, p99",
        ),
        Row(
            "last arrival → party released, p50",
            "release_ms.pooled_p50",
            "fanout_ms.pooled_p50",
            "write → every process's watch, p50",
        ),
        Row(
            "last arrival → party released, p99 of all parties and rounds",
            "release_ms.pooled_p99",
            "wake_floor_ms.pooled_p99",
            "write → as many plain tasks resumed by each process's watch, p99",
        ),
        Row("last arrival → last party released, p50 of rounds", "last_release_ms.pooled_p50"),
        Row("other arrivals: time until all recorded", "arrive_s"),
        Row("API writes per party (successful)", "per_party.writes_ok"),
        Row("409s per party", "per_party.conflicts"),
        Row("GETs per party", "per_party.reads"),
        Row("barrier object at the opening", "object_bytes"),
        Row("watch events per process per round", "watch_events_per_process"),
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (BARRIER,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.barrier",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 3)
    repeat_cap_s: ClassVar[tuple[float, float]] = (150.0, 300.0)

    async def setup(self, ctx: Context) -> None:
        self.processes = ctx.size(full=8, quick=4)
        self.parties = ctx.size(full=4096, quick=512)
        self.children = await spawn_children(ctx, self.processes)
        self.client = await ctx.client("barrier-last")
        await self.client.watch(BARRIER, self.client.namespace)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        rounds = ctx.size(full=5, quick=2)
        m = Measurement()
        release, told, last_release, floor, arrivals, sizes = [], [], [], [], [], []
        wake_floor: list[float] = []
        stats: Counter[str] = Counter()
        for _ in range(rounds):
            result = await one_round(self.client, self.children, name=NAME, expected=self.parties)
            release += result["release_ms"]
            told += result["told_ms"]
            last_release.append(max(result["release_ms"]))
            arrivals.append(result["arrive_s"])
            sizes.append(result["bytes"])
            stats.update(result["stats"])
            for _ in range(FANOUT_SAMPLES):
                floor.append((await fanout(self.client, self.children, NAME))[0])
            _, resumed = await fanout(
                self.client, self.children, NAME, shares(self.parties - 1, self.processes)
            )
            wake_floor += resumed
        m.add_series("release_ms", release)
        m.add_series("told_ms", told)
        m.add_series("last_release_ms", last_release)
        m.add_series("fanout_ms", floor)
        m.add_series("wake_floor_ms", wake_floor)
        m.add("arrive_s", statistics.median(arrivals), "s")
        m.add("object_bytes", max(sizes), "bytes")
        counts = request_counts(Counter(), stats)
        m.add_counts("per_party", counts, self.parties * rounds)
        m.add(
            "watch_events_per_process",
            counts["watch_events"] / (rounds * (self.processes + 1)),
            "events",
        )
        m.notes.append(
            f"{self.processes} processes share {self.parties - 1} parties, the harness has "
            "the last; release is measured from the last party's wait() to each party's "
            "return (a process told resumes its parties' tasks one by one: ~50 us each on "
            "this machine); watch events include the fan-out samples and the arrival claims"
        )
        return m

    async def teardown(self, ctx: Context) -> None:
        for child in self.children:
            if child.process.returncode is None:
                await child.send(op="stop")


SCENARIO = BarrierScenario()

"""Many writers on one object, as tasks in this process or as separate processes.

A *load worker* owns one client and runs phases on command: ``blind`` (unconditional
PATCHes), ``cas`` (naive GET+PUT), ``semaphore`` (acquire+release with zero hold). All
workers start a phase at the same monotonic instant, warm up, and then count what
completes inside the measurement window; request counters and CPU are sampled at the
window's edges, so neither the start-up burst (every worker queueing at once) nor the
clean-up after it (cancelled waiters leaving the queue) is charged to the steady state.
How long that clean-up took is reported separately.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import anyio
import attrs

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import SEMAPHORE, ResourceKind

from . import _baselines, _instrument
from ._baselines import Window
from ._child import Child, Link, rusage_cpu_seconds
from ._harness import Context, busy_percent, counter_delta, machine_ticks

SEMAPHORE_PERMITS = 4
KINDS: dict[str, ResourceKind] = {"configmap": _baselines.CONFIGMAP, "semaphore": SEMAPHORE}


async def semaphore_cycles(client: Client, name: str, window: Window) -> None:
    """Acquire+release with zero hold until the window closes."""
    from konductor_sdk.semaphore import Semaphore

    semaphore = Semaphore(name, client=client)
    with anyio.move_on_after(max(0.0, window.closes - time.monotonic())):
        while True:
            permit = await semaphore.acquire()
            # Shielded: a permit left held would distort what follows (a cancelled
            # acquire() itself gives back a permit granted at the last moment).
            with anyio.CancelScope(shield=True):
                await permit.release()
            window.record()


async def _sample(at: float, into: dict[str, Any], key: str, client: Client) -> None:
    await anyio.sleep(max(0.0, at - time.monotonic()))
    into[key] = (client.store.stats.copy(), rusage_cpu_seconds(), _instrument.snapshot())


async def run_phase(client: Client, command: dict[str, Any]) -> dict[str, Any]:
    """One phase of one worker (see :meth:`LoadGroup.phase` for the command)."""
    op, kind, name = command["op"], KINDS[command["kind"]], command["name"]
    window = Window(command["opens"], command["closes"])
    samples: dict[str, Any] = {}
    conflicts = 0
    await anyio.sleep(max(0.0, command["start"] - time.monotonic()))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_sample, window.opens, samples, "opens", client)
        tg.start_soon(_sample, window.closes, samples, "closes", client)
        if op == "blind":
            await _baselines.blind_writes(client, kind, name, window)
        elif op == "cas":
            conflicts = await _baselines.cas_writes(client, kind, name, window)
        elif op == "semaphore":
            await semaphore_cycles(client, name, window)
        else:
            raise ValueError(f"unknown phase {op!r}")
    finished = time.monotonic()
    delta = Counter(samples["closes"][0])
    delta.subtract(samples["opens"][0])
    return {
        "done": window.done,
        "cas_conflicts": conflicts,
        "stats": dict(delta),
        "cpu_s": samples["closes"][1] - samples["opens"][1],
        "instrument": _instrument.delta(samples["opens"][2], samples["closes"][2]),
        "finished": finished,
    }


async def worker(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """Child-process entry: one client, phases on command until ``stop``."""
    if params.get("instrument"):
        _instrument.install()
    identity = Identity(holder=params["holder"])
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        if params.get("watch_semaphores"):
            await client.watch(SEMAPHORE, client.namespace)
        await link.send("ready")
        while True:
            command = await link.receive()
            if command["op"] == "stop":
                return {}
            await link.send("phase", **await run_phase(client, command))


@attrs.frozen
class PhaseResult:
    """Totals over all workers of one phase's measurement window."""

    done: int
    cas_conflicts: int
    seconds: float
    stats: Counter[str]
    clients_cpu_s: float
    server_cpu_s: float
    """apiserver + etcd."""
    cleanup_s: float
    """From the window's close until the last worker had stopped (cancelled waiters
    leaving the queue, releases in flight)."""
    machine_busy: float
    """% of the machine's CPU busy in the window, whoever used it."""
    instrument: dict[str, float]
    """Totals of :mod:`benchmarks._instrument` (empty unless the group instruments)."""
    server: dict[str, float] = attrs.field(factory=dict)
    """The apiserver's own counters over the window (``requests.<code>``...)."""

    @property
    def per_second(self) -> float:
        return self.done / self.seconds

    @property
    def cpu_utilisation(self) -> float:
        """Share of all cores busy with clients + apiserver + etcd in the window."""
        cores = len(os.sched_getaffinity(0))
        return (self.clients_cpu_s + self.server_cpu_s) / (self.seconds * cores)


class LoadGroup:
    """``n`` load workers, as tasks of this process (each with its own client: own HTTP
    session and watches) or as ``n`` child processes."""

    def __init__(self, n: int, *, processes: bool, instrument: bool = False) -> None:
        self.n = n
        self.processes = processes
        self.instrument = instrument
        if instrument and not processes:
            _instrument.install()
        self._clients: list[Client] = []
        self._children: list[Child] = []
        self._ctx: Context | None = None
        self.last_results: list[dict[str, Any]] = []

    async def start(
        self,
        ctx: Context,
        *,
        label: str,
        namespace: str | None = None,
        watch_semaphores: bool = False,
    ) -> None:
        """Connect every worker (in ``namespace``, default the context's)."""
        self._ctx = ctx
        namespace = namespace or ctx.namespace
        if self.processes:
            async with anyio.create_task_group() as tg:
                for i in range(self.n):
                    tg.start_soon(self._spawn, ctx, label, i, namespace, watch_semaphores)
        else:
            for i in range(self.n):
                client = await ctx.client(f"{label}-{i}", namespace=namespace)
                if watch_semaphores:
                    await client.watch(SEMAPHORE, client.namespace)
                self._clients.append(client)

    async def _spawn(
        self, ctx: Context, label: str, i: int, namespace: str, watch_semaphores: bool
    ) -> None:
        params = {
            "holder": f"{label}-{i}",
            "namespace": namespace,
            "watch_semaphores": watch_semaphores,
            "instrument": self.instrument,
        }
        child = await ctx.spawn("benchmarks._load:worker", params, name=f"{label}-{i}")
        await child.expect("ready")
        self._children.append(child)

    async def phase(
        self, op: str, kind: str, name: str, *, warmup: float, seconds: float
    ) -> PhaseResult:
        """All workers run ``op`` on ``name``; measured for ``seconds`` after ``warmup``."""
        ctx = self._ctx
        assert ctx is not None, "start() first"
        # Far enough ahead that every worker has its command before the phase starts.
        start = time.monotonic() + 0.2 + 0.005 * self.n
        closes = start + warmup + seconds
        command: dict[str, Any] = {
            "op": op,
            "kind": kind,
            "name": name,
            "start": start,
            "opens": start + warmup,
            "closes": start + warmup + seconds,
        }
        results: list[dict[str, Any]] = []
        edges: dict[str, tuple[float, float]] = {}
        machine: dict[str, tuple[int, int]] = {}
        instrumented: dict[str, dict[str, float]] = {}
        counters: dict[str, dict[str, float]] = {}

        async def local(client: Client) -> None:
            results.append(await run_phase(client, command))

        async def remote(child: Child) -> None:
            await child.send(**command)
            results.append(await child.expect("phase"))

        async def sample(key: str) -> None:
            await anyio.sleep(max(0.0, command[key] - time.monotonic()))
            edges[key] = (sum(ctx.server_cpu().values()), rusage_cpu_seconds())
            machine[key] = machine_ticks()
            instrumented[key] = _instrument.snapshot()
            counters[key] = await ctx.server_counters()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample, "opens")
            tg.start_soon(sample, "closes")
            for client in self._clients:
                tg.start_soon(local, client)
            for child in self._children:
                tg.start_soon(remote, child)
        self.last_results = results  # raw per-worker reports, for diagnostics
        stats: Counter[str] = Counter()
        for r in results:
            stats.update(r["stats"])
        # Local workers share this process: its CPU is counted once, not per worker.
        clients_cpu = edges["closes"][1] - edges["opens"][1]
        instrument = _instrument.delta(instrumented["opens"], instrumented["closes"])
        if self.processes:
            clients_cpu = sum(r["cpu_s"] for r in results)
            instrument = {}
            for r in results:
                for key, value in r["instrument"].items():
                    instrument[key] = instrument.get(key, 0.0) + value
        return PhaseResult(
            done=sum(r["done"] for r in results),
            cas_conflicts=sum(r["cas_conflicts"] for r in results),
            seconds=seconds,
            stats=stats,
            clients_cpu_s=clients_cpu,
            server_cpu_s=edges["closes"][0] - edges["opens"][0],
            cleanup_s=max(r["finished"] for r in results) - closes,
            machine_busy=busy_percent(machine["opens"], machine["closes"]),
            instrument=instrument,
            server=counter_delta(counters["opens"], counters["closes"]),
        )

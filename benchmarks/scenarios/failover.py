"""Scenario 4: leader failover — Konductor's elector vs the ``kubernetes`` client's.

Konductor's elector runs twice, with its own Lease kind (the default backend) and with the
built-in ``coordination.k8s.io`` Lease (the object ``kubernetes.leaderelection`` uses
too). Each runs as three candidate processes against the same server with the same timing
(lease duration 3 s, renew deadline 2 s, retry period 1 s — the ``kubernetes`` package
accepts nothing below 1 s for the retry period). Per repeat and per implementation:

* graceful: the leader gets SIGTERM, the time until another candidate's
  ``on_started_leading`` runs. Konductor's candidate process cancels its elector on
  SIGTERM, which releases the lease: one JSON-patch write that every standby's watch
  delivers; on the Konductor Lease only the candidate first in line (its ``Claim`` is the
  oldest of the highest priority) writes the grant, the others keep waiting without a
  request. ``kubernetes.leaderelection`` has no way to release (its ``run()`` never
  returns while it leads), so SIGTERM ends the process like a kill and a follower has to
  wait for the lease to expire — that is the library's behaviour, not a benchmark artefact;
* kill -9: the leader gets SIGKILL, the same measurement: a standby takes over once the
  holder entry has not been renewed for the lease duration on its own clock (the killed
  leader held no Claim, so the first in line is a live standby).

Times are ``time.monotonic()`` (system-wide on Linux) taken by the harness just before
the signal and by the new leader's callback. Killed candidates are replaced before the
next trial so there are always two followers, which have run for a settle time (two
retry periods, plus a random fraction of one so that the signal does not always land at
the same phase of the leader's renewal cycle) so that they have seen the current leader.
"""

from __future__ import annotations

import math
import random
import secrets
import signal
import time
from typing import Any, ClassVar, final

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import LEASE, ResourceKind

from .._child import Child, ChildFailed, Link
from .._harness import Context, Scenario
from .._report import Measurement, Row

LEASE_DURATION = 3
RENEW_DEADLINE = 2
RETRY_PERIOD = 1
CANDIDATES = 3
QUICK_SKIPS = frozenset({"konductor_coordination"})
SETTLE_S = 2 * RETRY_PERIOD + 0.5

# name -> (child entry point, backend for Konductor's elector)
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "konductor": (f"{__name__}:konductor_candidate", "konductor"),
    "konductor_coordination": (f"{__name__}:konductor_candidate", "coordination"),
    "kubernetes": (f"{__name__}:kubernetes_candidate", ""),
}


async def kubernetes_candidate(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """One candidate using ``kubernetes.leaderelection`` with a coordination/v1 Lease."""
    from kubernetes import config
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    # The sync client has no type hints; these are its documented entry points.
    config.load_kube_config(config_file=params["kubeconfig"])  # type: ignore[no-untyped-call]
    lock = LeaseLock(  # type: ignore[no-untyped-call]
        params["lock"], params["namespace"], params["identity"]
    )
    election = leaderelection.LeaderElection(  # type: ignore[no-untyped-call]
        electionconfig.Config(  # type: ignore[no-untyped-call]
            lock,
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
            onstarted_leading=lambda: link.emit("leading", t=time.monotonic()),
            onstopped_leading=lambda: link.emit("stopped", t=time.monotonic()),
        )
    )
    await link.send("ready")
    # Blocking and uncancellable by design: it returns only after losing the lease.
    await anyio.to_thread.run_sync(election.run, abandon_on_cancel=True)
    return {}


async def konductor_candidate(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """One candidate using Konductor's elector; SIGTERM steps down gracefully."""
    from konductor_sdk.election import ElectionConfig, LeaderElector

    identity = Identity(holder=params["identity"])
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        elector = LeaderElector(
            ElectionConfig(
                name=params["lock"],
                identity=params["identity"],
                lease_duration=LEASE_DURATION,
                renew_deadline=RENEW_DEADLINE,
                retry_period=RETRY_PERIOD,
                backend=params["backend"],
            ),
            client=client,
            on_started_leading=lambda *_: link.emit("leading", t=time.monotonic()),
            on_stopped_leading=lambda *_: link.emit("stopped", t=time.monotonic()),
        )
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def step_down_on_sigterm() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(step_down_on_sigterm)
                await link.send("ready")
                await elector.run()
    return {}


Event = tuple[Child, dict[str, Any]]
_K8S = "kubernetes.leaderelection"


@final
class Failover(Scenario):
    name: ClassVar[str] = "failover"
    number: ClassVar[str] = "4"
    title: ClassVar[str] = "Leader failover (3 candidates, 3 s lease)"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("graceful handoff", "konductor.graceful_s", "kubernetes.graceful_s", _K8S),
        Row("kill -9 failover", "konductor.kill_s", "kubernetes.kill_s", _K8S),
        Row("graceful: old leader stopped → new started", "konductor.handoff_gap_s"),
        Row(
            "graceful handoff, coordination.k8s.io backend",
            "konductor_coordination.graceful_s",
            "kubernetes.graceful_s",
            _K8S,
        ),
        Row(
            "kill -9 failover, coordination.k8s.io backend",
            "konductor_coordination.kill_s",
            "kubernetes.kill_s",
            _K8S,
        ),
        Row(
            "graceful, coordination backend: old stopped → new started",
            "konductor_coordination.handoff_gap_s",
        ),
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (LEASE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.election",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 3)
    repeat_cap_s: ClassVar[tuple[float, float]] = (90.0, 90.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        m = Measurement()
        for impl, (target, backend) in IMPLEMENTATIONS.items():
            if ctx.quick and impl in QUICK_SKIPS:
                m.notes.append(f"--quick: {impl} not run")
                continue
            figures = await self._trials(ctx, impl, target, backend, repeat)
            for key, value in figures.items():
                m.add(f"{impl}.{key}", value, "s")
        return m

    async def _trials(
        self, ctx: Context, impl: str, target: str, backend: str, repeat: int
    ) -> dict[str, float]:
        lock = f"{impl.replace('_', '-')}-{repeat}-{secrets.token_hex(2)}"
        send, receive = anyio.create_memory_object_stream[Event](64)
        children: list[Child] = []
        figures: dict[str, float] = {}
        try:
            async with anyio.create_task_group() as tg:

                async def start(i: int) -> None:
                    params = {"lock": lock, "identity": f"{lock}-c{i}", "backend": backend}
                    child = await ctx.spawn(target, params, name=f"{lock}-c{i}")
                    children.append(child)
                    await child.expect("ready")
                    tg.start_soon(_pump, child, send)

                async with anyio.create_task_group() as starting:
                    for i in range(CANDIDATES):
                        starting.start_soon(start, i)
                spawned = CANDIDATES
                leader, _, _ = await _next_leader(receive, exclude=None)
                for trial, signum in (("graceful", signal.SIGTERM), ("kill", signal.SIGKILL)):
                    # Followers have seen the current leader; the random part spreads the
                    # signal over the leader's renewal period, which would otherwise bias
                    # every trial to the same phase.
                    await anyio.sleep(SETTLE_S + random.uniform(0, RETRY_PERIOD))
                    signalled = time.monotonic()
                    leader.signal(signum)
                    new_leader, started, stopped = await _next_leader(receive, exclude=leader)
                    figures[f"{trial}_s"] = started - signalled
                    if trial == "graceful":
                        figures["handoff_gap_s"] = started - stopped if stopped else math.nan
                    leader = new_leader
                    await start(spawned)  # the replacement of the stopped leader
                    spawned += 1
                tg.cancel_scope.cancel()
        finally:
            for child in children:
                await child.aclose()
        return figures


async def _pump(child: Child, send: MemoryObjectSendStream[Event]) -> None:
    try:
        while True:
            await send.send((child, await child.receive()))
    except ChildFailed:
        await send.send((child, {"event": "exited"}))


async def _next_leader(
    receive: MemoryObjectReceiveStream[Event], *, exclude: Child | None
) -> tuple[Child, float, float | None]:
    """The next candidate other than ``exclude`` to start leading, when it did, and when
    ``exclude`` reported that it stopped leading (if it did before)."""
    stopped: float | None = None
    async for child, message in receive:
        if child is exclude and message["event"] == "stopped":
            stopped = float(message["t"])
        elif child is not exclude and message["event"] == "leading":
            return child, float(message["t"]), stopped
    raise ChildFailed("every candidate exited")


SCENARIO = Failover()

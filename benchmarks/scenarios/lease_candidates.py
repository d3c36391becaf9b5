"""Scenario 4b: one Lease, N candidates from 4 processes — cost versus N.

Each candidate is its own ``Claim`` (nothing per candidate goes into the Lease object), so
registering N candidates is N small creates, and a handoff costs the same whatever N is:
the next candidate in line is woken by its process's watch and writes one grant. For
N = 8 ... 1,000 (the old layout capped candidates at 32 and, at 256 from 4 processes, 185
of them raised ``ConflictExhausted``), per repeat and per N:

* a holder in the harness process takes the lease; 4 child processes start N/4
  ``async with Lease(...)`` candidates each (hold 0);
* **register**: from the start signal until the harness's watch of the lease's Claims
  shows all N (one field-selected watch: this is what every process pays to see the line);
* **drain**: the holder releases; each candidate takes the lease, leaves at once, and the
  next one in line takes it. A raw watch of the Lease (not the SDK's cache) records every
  version with its receive time: the **handoff latency** is from a version without holder
  to the next version with one, as this observer saw them;
* the **size of the Lease object** (its JSON) while held, which must not grow with N;
* API requests per candidate (claim, grant, release, claim delete, plus each process's
  session and whoami), and candidates that raised anything (must be 0).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any, ClassVar, final

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.claims import claim_queue
from konductor_sdk._kernel.objects import LEASE, ResourceKind

from .._child import Child, Link
from .._harness import Context, Scenario, accumulate, per_size, request_counts
from .._report import Measurement, Row

PROCESSES = 4
TTL = 30
SIZES_FULL = (8, 64, 256, 1000)
SIZES_QUICK = (8, 64)


async def candidates_child(params: dict[str, Any], link: Link) -> dict[str, Any]:
    """N/4 candidates in one process: each takes the lease once and leaves at once."""
    from konductor_sdk.lease import Lease

    count = int(params["count"])
    identity = Identity(holder=params["identity"])
    async with Client(
        kubeconfig=params["kubeconfig"], namespace=params["namespace"], identity=identity
    ) as client:
        await client.connect()
        await client.whoami()  # once per process; not part of what a candidate costs
        await link.send("ready")
        await link.receive()  # "go"
        before = client.store.stats.copy()
        lease = Lease(params["lease"], ttl=TTL, client=client)
        errors: list[str] = []
        got = 0

        async def candidate() -> None:
            nonlocal got
            try:
                async with lease:
                    got += 1
            except Exception as exc:  # recorded: waiting must never fail
                errors.append(f"{type(exc).__name__}: {exc}")

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(candidate)
        return {
            "acquired": got,
            "errors": len(errors),
            "error_examples": sorted(set(errors))[:3],
            "requests": request_counts(before, client.store.stats),
            "evaluations": lease.statistics().evaluations,
        }


@final
class LeaseCandidates(Scenario):
    name: ClassVar[str] = "lease_candidates"
    number: ClassVar[str] = "4b"
    title: ClassVar[str] = "One Lease, N candidates from 4 processes (cost vs N)"
    rows: ClassVar[tuple[Row, ...]] = tuple(
        row
        for n in SIZES_FULL
        for row in (
            Row(f"N={n}: register all N candidates", f"n{n}.register_s"),
            Row(f"N={n}: handoff, release seen → next grant seen (p50)", f"n{n}.handoff_ms.p50"),
            Row(f"N={n}: handoff (p99)", f"n{n}.handoff_ms.p99"),
            Row(f"N={n}: handoffs per second (drain)", f"n{n}.handoffs_per_s"),
            Row(f"N={n}: API writes per candidate", f"n{n}.per_candidate.writes"),
            Row(f"N={n}: 409s per candidate", f"n{n}.per_candidate.conflicts"),
            Row(f"N={n}: Lease object size while held", f"n{n}.object_bytes"),
            Row(f"N={n}: candidates that raised", f"n{n}.errors"),
        )
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (LEASE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.lease",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 2)
    repeat_cap_s: ClassVar[tuple[float, float]] = (240.0, 600.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        return await per_size(
            ctx, SIZES_FULL, SIZES_QUICK, lambda m, n: self._one(ctx, m, n, repeat)
        )

    async def _one(self, ctx: Context, m: Measurement, n: int, repeat: int) -> None:
        name = f"cands-{n}-{repeat}-{secrets.token_hex(2)}"
        holder = await ctx.client("cands-holder")
        observer = await ctx.client("cands-observer")
        from konductor_sdk.lease import Lease

        held = await Lease(name, ttl=TTL, client=holder).acquire()
        children: list[Child] = []
        for p in range(PROCESSES):
            count = n // PROCESSES + (1 if p < n % PROCESSES else 0)
            params = {"lease": name, "count": count, "identity": f"{name}-p{p}"}
            children.append(await ctx.spawn(f"{__name__}:candidates_child", params, name=name))
        for child in children:
            await child.expect("ready")
        versions: list[tuple[float, dict[str, Any]]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_record, observer, name, versions)
            async with claim_queue(observer, LEASE, name) as queue:
                started = time.monotonic()
                for child in children:
                    await child.send(command="go")
                while len(queue) < n:
                    await queue.next_change().wait()
                registered = time.monotonic() - started
            obj = await observer.store.get(LEASE, observer.namespace, name)
            object_bytes = len(json.dumps(obj.raw))
            released = time.monotonic()
            await held.release()
            results = [await child.expect("result") for child in children]
            drained = time.monotonic() - released
            await anyio.sleep(0.5)  # the last versions reach the raw watch
            tg.cancel_scope.cancel()
        handoffs = _handoffs(versions)
        prefix = f"n{n}"
        m.add(f"{prefix}.candidates", n, "candidates")
        m.add(f"{prefix}.register_s", registered, "s")
        m.add_series(f"{prefix}.handoff_ms", [h * 1000 for h in handoffs], "ms")
        m.add(f"{prefix}.handoffs_per_s", n / drained if drained else math.nan, "handoffs/s")
        m.add(f"{prefix}.drain_s", drained, "s")
        m.add(f"{prefix}.object_bytes", object_bytes, "bytes")
        m.add(f"{prefix}.errors", sum(r["errors"] for r in results), "candidates")
        m.add(f"{prefix}.acquired", sum(r["acquired"] for r in results), "candidates")
        m.add(f"{prefix}.evaluations", sum(r["evaluations"] for r in results), "evaluations")
        m.add(f"{prefix}.children_cpu_s", sum(r["cpu_s"] for r in results), "s")
        totals: dict[str, float] = {}
        for r in results:
            accumulate(totals, r["requests"])
        m.add_counts(f"{prefix}.per_candidate", totals, n)
        for r in results:
            m.notes += [f"N={n}: {e}" for e in r["error_examples"]]


async def _record(client: Client, name: str, versions: list[tuple[float, dict[str, Any]]]) -> None:
    """Every version of the lease as a raw watch delivers it, with its receive time."""
    store = client.store
    listed = await store.list(LEASE, client.namespace)
    rv = listed.resource_version
    while True:
        async for event in store.watch(LEASE, client.namespace, resource_version=rv):
            rv = event.object.resource_version
            if event.object.name == name and event.type != "BOOKMARK":
                versions.append((time.monotonic(), dict(event.object.status)))


def _handoffs(versions: list[tuple[float, dict[str, Any]]]) -> list[float]:
    """From each version without holder to the next version with one."""
    out: list[float] = []
    free_since: float | None = None
    for seen, status in versions:
        if not status.get("holders"):
            if free_since is None:
                free_since = seen
        elif free_since is not None:
            out.append(seen - free_since)
            free_since = None
    return out


SCENARIO = LeaseCandidates()

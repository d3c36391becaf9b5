"""Scenario 2: 32 clients on a 4-permit Semaphore with zero hold time.

Refusals per grant are counted by the apiserver itself (``apiserver_request_total`` by
code, 409 and 422, over the window): a grant that loses its race fails its JSON-patch
``test`` with 422, not 409.

Run twice per repeat: 32 clients as tasks of this process (each its own client, HTTP
session and watch), and 32 separate processes. In each layout the same workers first
measure two baselines on the same semaphore object — blind PATCHes by all 32 at once (the
rate at which the server applies writes to one object) and naive compare-and-swap (GET,
PUT with the resourceVersion, retry at once on 409: what any optimistic protocol costs
with 32 writers) — and then acquire+release in a loop for the same window. A grant needs
at least two writes (grant, release), so the floor is half the baseline's writes/s; 409s
per grant measure the conflict storm. Each phase warms up before its window opens and is
counted only inside it (see ``_load``); the clean-up after the window (cancelled waiters
leaving the queue) is timed, and what it left behind on the object is counted.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, final

from konductor_sdk import Client
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, ResourceKind

from .._harness import Context, Scenario, request_counts
from .._load import SEMAPHORE_PERMITS, LoadGroup
from .._report import Measurement, Row

NAME = "contended"
CLIENTS = 32


def _rows(layout: str) -> tuple[Row, ...]:
    return (
        Row(f"{layout}: grants/s", f"{layout}.grants_per_s", f"{layout}.blind_per_s", _BLIND),
        Row(
            f"{layout}: grants/s vs naive CAS",
            f"{layout}.grants_per_s",
            f"{layout}.cas_per_s",
            "naive CAS writes/s",
        ),
        Row(
            f"{layout}: 409s + failed-test 422s per grant (apiserver /metrics)",
            f"{layout}.refused_per_grant",
            f"{layout}.cas_conflicts_per_write",
            "naive CAS: 409s per write",
        ),
        Row(f"{layout}: writes per grant (floor 2; 4 with a claim)", f"{layout}.per_grant.writes"),
        Row(f"{layout}: GETs per grant", f"{layout}.per_grant.reads"),
        Row(
            f"{layout}: CPU busy, ours (whole machine)",
            f"{layout}.cpu_busy",
            f"{layout}.machine_busy",
            "whole machine",
        ),
        Row(f"{layout}: window close → all 32 stopped", f"{layout}.cleanup_s"),
        Row(f"{layout}: holders left behind after that", f"{layout}.holders_left"),
        Row(f"{layout}: claims left behind after that", f"{layout}.claims_left"),
    )


_BLIND = "blind PATCH writes/s"


@final
class Contention(Scenario):
    name: ClassVar[str] = "contention"
    number: ClassVar[str] = "2"
    title: ClassVar[str] = f"Contention: {CLIENTS} clients, {SEMAPHORE_PERMITS} permits, no hold"
    rows: ClassVar[tuple[Row, ...]] = _rows("tasks") + _rows("processes")
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 3)
    repeat_cap_s: ClassVar[tuple[float, float]] = (90.0, 150.0)

    async def setup(self, ctx: Context) -> None:
        self.layouts: dict[str, tuple[Client, LoadGroup]] = {}
        for layout, processes in (("tasks", False), ("processes", True)):
            # One namespace per layout: the idle layout's watches then see none of the
            # other's events (every client watches its namespace's semaphores).
            namespace = await ctx.new_namespace(f"bench-contention-{layout}")
            creator = await ctx.client(f"contention-{layout}-creator", namespace=namespace)
            group = LoadGroup(CLIENTS, processes=processes)
            await group.start(
                ctx, label=f"contention-{layout}", namespace=namespace, watch_semaphores=True
            )
            self.layouts[layout] = (creator, group)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        from konductor_sdk.semaphore import Semaphore

        warmup = ctx.seconds(full=3.0, quick=1.5)
        seconds = ctx.seconds(full=8.0, quick=3.0)
        m = Measurement()
        for layout, (creator, group) in self.layouts.items():
            # A fresh object per repeat: nothing a previous repeat left behind (an entry
            # whose clean-up gave up) can block this one.
            name = f"{NAME}-{repeat}"
            await Semaphore(name, client=creator).create(permits=SEMAPHORE_PERMITS)
            blind = await group.phase("blind", "semaphore", name, warmup=0.5, seconds=seconds)
            m.add(f"{layout}.blind_per_s", blind.per_second, "writes/s")
            cas = await group.phase("cas", "semaphore", name, warmup=0.5, seconds=seconds)
            m.add(f"{layout}.cas_per_s", cas.per_second, "writes/s")
            m.add(f"{layout}.cas_conflicts_per_write", cas.cas_conflicts / max(cas.done, 1), "409s")
            grants = await group.phase(
                "semaphore", "semaphore", name, warmup=warmup, seconds=seconds
            )
            per = max(grants.done, 1)
            m.add(f"{layout}.grants_per_s", grants.per_second, "grants/s")
            m.add(f"{layout}.grants", grants.done, "grants")
            m.add(f"{layout}.cpu_busy", grants.cpu_utilisation * 100, "% of all cores")
            m.add(f"{layout}.machine_busy", grants.machine_busy, "% of all cores")
            m.add(f"{layout}.server_cpu_ms_per_grant", grants.server_cpu_s / per * 1000, "ms")
            m.add(f"{layout}.client_cpu_ms_per_grant", grants.clients_cpu_s / per * 1000, "ms")
            m.add_counts(f"{layout}.per_grant", request_counts(Counter(), grants.stats), per)
            refused = grants.server.get("requests.409", 0) + grants.server.get("requests.422", 0)
            m.add(f"{layout}.refused_per_grant", refused / per, "refusals")
            m.add(f"{layout}.cleanup_s", grants.cleanup_s, "s")
            left = (await creator.store.get(SEMAPHORE, creator.namespace, name)).status
            m.add(f"{layout}.holders_left", len(left.get("holders") or {}), "entries")
            claims = await creator.store.list(
                CLAIM, creator.namespace, field_selector=target_selector(SEMAPHORE, name)
            )
            m.add(f"{layout}.claims_left", len(claims.items), "claims")
        return m


SCENARIO = Contention()

"""The core controller against an in-memory store, on a fake clock.

Every step is sequenced by the store's watch events and ``wait_all_tasks_blocked`` (all
other tasks are waiting on something): no sleeps, no wall-clock assertions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import pytest
from _operator_fakes import FakeStore
from anyio import wait_all_tasks_blocked
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.lowlevel import checkpoint
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from konductor_operator import CoreController
from konductor_operator._context import OperatorContext
from konductor_operator._pods import PodWatcher
from konductor_sdk import Client, Identity, PodRef
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import BARRIER, CLAIM, EVENT, POD, SEMAPHORE, SESSION
from konductor_sdk._machines.rules import registered

pytestmark = pytest.mark.anyio
NS = "ns"


@attrs.define
class Harness:
    store: FakeStore
    clock: FakeClock
    client: Client
    core: CoreController
    ctx: OperatorContext

    async def settle(self) -> None:
        """Let watches, the timer loop, workers and the event writer run dry."""
        self.core.poke()
        for _ in range(3):  # a write's watch event may queue one more pass
            await wait_all_tasks_blocked()
            await self.core.queue.join()
        await wait_all_tasks_blocked()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()

    def status(self, kind: Any = SEMAPHORE, name: str = "s") -> dict[str, Any]:
        return dict(self.store.raw(kind, NS, name).get("status") or {})

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        out = [raw for (plural, _, _), raw in self.store.objects.items() if plural == EVENT.plural]
        return [e for e in out if reason is None or e["reason"] == reason]

    def reaped(self, reason: str = "Expired", kind: str = "Semaphore") -> float:
        value = self.ctx.metrics.registry.get_sample_value(
            "konductor_operator_reaped_total", {"kind": kind, "reason": reason}
        )
        return value or 0.0

    def renew(self, key: str, *, map_name: str = "holders", skew: str = "") -> None:
        """What an owner's Renewal does: a JSON patch bumping renewCount (sync helper)."""
        raw = self.store.raw(SEMAPHORE, NS, "s")
        entry = raw["status"][map_name][key]
        entry["renewCount"] += 1
        entry["renewedAt"] = skew or entry.get("renewedAt", "")
        self.store.put(SEMAPHORE, raw)


def entry(holder: str, token: int | None, *, ttl: int = 10, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "holder": holder,
        "ttlSeconds": ttl,
        "renewCount": 0,
        "acquiredAt": "2026-01-01T00:00:00.000000Z",
        "renewedAt": "2026-01-01T00:00:00.000000Z",
        **extra,
    }
    if token is not None:
        out["token"] = token
    return out


def semaphore(permits: int = 2, **holders: dict[str, Any]) -> dict[str, Any]:
    status = registered()["Semaphore"].normalize(
        {"permits": permits}, {"holders": holders, "waiters": {}, "fencingToken": 10}
    )
    return {
        "metadata": {"name": "s", "namespace": NS},
        "spec": {"permits": permits},
        "status": status,
    }


def make_pod(name: str, uid: str, phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": phase},
    }


@asynccontextmanager
async def running(*kinds: str, store: FakeStore | None = None) -> AsyncIterator[Harness]:
    store = store or FakeStore()
    clock = FakeClock()
    client = Client(store=store, namespace=NS, identity=Identity("operator"), clock=clock)
    await client.connect()
    ctx = OperatorContext.standalone(client, (NS,), logger=logging.getLogger("test.operator"))
    rules = registered()
    core = CoreController(ctx, rules={k: rules[k] for k in kinds or ("Semaphore",)})
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(core.run)
            tg.start_soon(ctx.events.run)
            with anyio.fail_after(5):
                await core.ready.wait()
            harness = Harness(store, clock, client, core, ctx)
            await harness.settle()
            yield harness
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()


async def test_expired_holder_is_reaped_after_its_ttl() -> None:
    store = FakeStore()
    store.put(SEMAPHORE, semaphore(permits=1, **{"0": entry("a", 11)}))
    async with running(store=store) as h:
        await h.advance(9.9)
        assert "0" in h.status()["holders"]
        await h.advance(0.1)
        status = h.status()
        assert status["holders"] == {}
        # The freed unit is taken by a waiter writing its own grant, never by the operator.
        assert (status["inUse"], status["available"], status["fencingToken"]) == (0, 1, 10)
        assert h.reaped() == 1
        [event] = h.events("Reaped")
        assert "a" in event["message"]
        assert event["involvedObject"]["name"] == "s"
        lag = h.ctx.metrics.registry.get_sample_value(
            "konductor_operator_reap_lag_seconds_count", {"kind": "Semaphore"}
        )
        assert lag == 1


async def test_renewing_holder_is_never_reaped_even_with_a_skewed_wall_clock() -> None:
    store = FakeStore()
    store.put(SEMAPHORE, semaphore(a=entry("a", 11)))
    async with running(store=store) as h:
        for i in range(30):  # 30 x 6 s = 3 minutes, well past the 10 s TTL
            await h.advance(6)
            skew = "1970-01-01T00:00:00Z" if i % 2 else "2199-01-01T00:00:00Z"
            h.renew("a", skew=skew)
            await h.settle()
        assert "a" in h.status()["holders"]
        assert h.reaped() == 0
        await h.advance(10)
        assert "a" not in h.status()["holders"], "once renewals stop, it goes"


async def test_renewals_cost_no_reconcile_pass() -> None:
    store = FakeStore()
    store.put(SEMAPHORE, semaphore(a=entry("a", 11)))
    async with running(store=store) as h:
        before = h.core.statistics()
        for _ in range(20):
            await h.advance(3)
            h.renew("a")
            await h.settle()
        after = h.core.statistics()
        assert after.passes == before.passes, "renewals only move the entry's deadline"
        assert (after.objects, after.timers, after.queued) == (1, 1, 0)
        assert "a" in h.status()["holders"]


async def test_a_renewal_racing_the_reap_wins() -> None:
    store = FakeStore()
    store.put(SEMAPHORE, semaphore(a=entry("a", 11)))
    async with running(store=store) as h:
        raced: list[bool] = []

        def renew_first(verb: str, key: Any) -> None:
            if verb == "replace" and key == ("semaphores", NS, "s") and not raced:
                raced.append(True)
                h.renew("a")  # lands between the operator's judgment and its write

        store.before_write = renew_first
        await h.advance(10)
        assert raced == [True]
        assert store.stats["conflict"] == 1
        assert "a" in h.status()["holders"]
        assert h.reaped() == 0
        assert not h.events("Reaped")
        store.before_write = None
        await h.advance(9.9)
        assert "a" in h.status()["holders"], "the renewal restarted the clock"
        await h.advance(0.1)
        assert "a" not in h.status()["holders"]


async def test_all_entries_due_together_are_removed_in_one_write() -> None:
    store = FakeStore()
    store.put(SEMAPHORE, semaphore(permits=5, **{f"h{i}": entry(f"h{i}", i) for i in range(5)}))
    async with running(store=store) as h:
        store.writes.clear()
        await h.advance(10)
        assert h.status()["holders"] == {}
        assert [w for w in store.writes if w[1][0] == "semaphores"] == [
            ("replace", ("semaphores", NS, "s"))
        ]
        assert h.reaped() == 5
        [event] = h.events("Reaped")  # five occurrences, aggregated into one Event
        assert event["count"] == 5
        assert event["message"].startswith("(combined")


async def test_drift_is_repaired_by_cas() -> None:
    store = FakeStore()
    async with running(store=store) as h:
        sem = semaphore(**{"0": entry("a", 11)})
        sem["status"].update(inUse=7, available=0, phase="Full")
        store.put(SEMAPHORE, sem)
        await h.settle()
        status = h.status()
        assert (status["inUse"], status["available"], status["phase"]) == (1, 1, "Ready")
        assert (
            h.ctx.metrics.registry.get_sample_value(
                "konductor_operator_status_writes_total", {"kind": "Semaphore", "why": "drift"}
            )
            == 1
        )


async def test_deleted_pod_reaps_its_entries_without_waiting_for_the_ttl() -> None:
    store = FakeStore()
    store.put(POD, make_pod("p", "uid-1", "Running"))
    ref = {"name": "p", "namespace": NS, "uid": "uid-1"}
    store.put(SEMAPHORE, semaphore(a=entry("a", 11, ttl=0, pod=ref), b=entry("b", 12)))
    async with running(store=store) as h:
        await h.advance(3600)
        assert "a" in h.status()["holders"], "ttlSeconds 0: never reaped by time"
        store.remove(POD, NS, "p")
        await h.settle()
        assert "a" not in h.status()["holders"]
        assert h.reaped("PodDeleted") == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [("Succeeded", "PodSucceeded"), ("Failed", "PodFailed"), ("replace", "PodReplaced")],
)
async def test_finished_or_replaced_pod_reaps_its_entries(change: str, reason: str) -> None:
    store = FakeStore()
    store.put(POD, make_pod("p", "uid-1", "Running"))
    ref = {"name": "p", "namespace": NS, "uid": "uid-1"}
    store.put(SEMAPHORE, semaphore(a=entry("a", 11, ttl=0, pod=ref)))
    async with running(store=store) as h:
        if change == "replace":
            # The watch missed the deletion (e.g. it was re-listing): only the new UID
            # under the same name tells that the old pod is gone.
            del store.objects[("pods", NS, "p")]
            store.put(POD, make_pod("p", "uid-2", "Running"))
        else:
            store.put(POD, make_pod("p", "uid-1", change))
        await h.settle()
        assert "a" not in h.status()["holders"]
        assert h.reaped(reason) == 1


async def test_entries_of_pods_gone_before_startup_are_reaped_on_startup() -> None:
    store = FakeStore()
    ref = {"name": "gone", "namespace": NS, "uid": "uid-0"}
    store.put(SEMAPHORE, semaphore(a=entry("a", 11, ttl=0, pod=ref)))
    async with running(store=store) as h:
        assert "a" not in h.status()["holders"]
        assert h.reaped("PodDeleted") == 1


async def test_a_pod_missing_from_a_lagging_cache_is_confirmed_before_reaping() -> None:
    store = FakeStore()
    client = Client(store=store, namespace=NS, identity=Identity("op"))
    await client.connect()
    seen: list[str] = []
    watcher = PodWatcher(client, (NS,), lambda etype, pod: seen.append(etype))
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        with anyio.fail_after(5):
            while not watcher.all_synced():
                await checkpoint()
        # The pod exists on the server but the watch has not delivered it (yet).
        raw = make_pod("fresh", "uid-9", "Running")
        raw["metadata"]["resourceVersion"] = "1"
        store.objects[("pods", NS, "fresh")] = raw
        ref = PodRef("fresh", NS, "uid-9")
        assert watcher.suspicious(ref)
        assert await watcher.verdict(ref) is None
        assert watcher.confirmations == 1
        assert await watcher.verdict(PodRef("never", NS, "uid-x")) == "PodDeleted"
        tg.cancel_scope.cancel()
    await client.aclose()


def barrier(arrived: int) -> dict[str, Any]:
    rules = registered()["Barrier"]
    spec = {"expected": 3, "timeoutSeconds": 30}
    status = rules.normalize(
        spec,
        {
            "generation": 1,
            "phase": "Waiting",
            "arrived": arrived,
            "arrivedBy": {"p": arrived},
            "nextIndex": arrived,
        },
    )
    return {"metadata": {"name": "b", "namespace": NS}, "spec": spec, "status": status}


async def test_barrier_timeout_fails_it_counting_who_is_missing() -> None:
    store = FakeStore()
    store.put(BARRIER, barrier(2))
    async with running("Barrier", store=store) as h:
        # The operator is the backstop: it fails the generation a little after the waiters
        # would (they name the missing parties; it only counts them).
        await h.advance(30 + 1.4)
        assert h.status(BARRIER, "b")["phase"] == "Waiting"
        await h.advance(0.2)
        status = h.status(BARRIER, "b")
        assert status["phase"] == "Failed"
        assert status["reason"] == "Timeout"
        assert status["missing"] == ["<1 more>"]
        [failed] = h.events("Failed")
        assert failed["type"] == "Warning"
        assert "timeoutSeconds" in failed["message"]
        assert (
            h.ctx.metrics.registry.get_sample_value(
                "konductor_operator_timeouts_total", {"kind": "Barrier"}
            )
            == 1
        )
        store.writes.clear()
        await h.advance(100)
        assert [w for w in store.writes if w[1][0] == "barriers"] == [], "fired once only"


async def test_gauges_are_exported_per_object() -> None:
    store = FakeStore()
    store.put(SEMAPHORE, semaphore(permits=3, **{"0": entry("a", 11)}))
    async with running(store=store) as h:
        labels = {"kind": "Semaphore", "namespace": NS, "name": "s"}
        get = h.ctx.metrics.registry.get_sample_value
        assert get("konductor_in_use", labels) == 1
        assert get("konductor_limit", labels) == 3
        assert b"konductor_waiters{" in h.ctx.metrics.render()
        store.remove(SEMAPHORE, NS, "s")
        await h.settle()
        assert get("konductor_in_use", labels) is None, "a deleted object's series vanish"


# -- queueLength: the live claims on an object that no grant names, written coalesced


def session(name: str = "sess") -> dict[str, Any]:
    spec = {"holder": "h", "ttlSeconds": 3600, "renewCount": 0}
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def claim(name: str, target: str = "s", **metadata: Any) -> dict[str, Any]:
    spec = {"target": {"kind": "Semaphore", "name": target}, "session": "sess", "holder": "h"}
    return {"metadata": {"name": name, "namespace": NS, **metadata}, "spec": spec}


def grant(claim_name: str, token: int) -> dict[str, Any]:
    """A v2 grant: names its session and the claim it was made for; no TTL of its own."""
    return {"weight": 1, "token": token, "session": "sess", "holder": "h", "claim": claim_name}


def count_writes(store: FakeStore) -> int:
    return sum(1 for verb, key in store.writes if key[0] == SEMAPHORE.plural)


async def test_queue_length_counts_live_claims_not_granted() -> None:
    store = FakeStore()
    store.put(SESSION, session())
    store.put(SEMAPHORE, semaphore(permits=1, **{"0": grant("c0", 11)}))
    for name in ("c0", "c1", "c2"):
        store.put(CLAIM, claim(name))
    store.put(CLAIM, claim("elsewhere", target="other"))
    store.put(CLAIM, claim("leaving", deletionTimestamp="2026-01-01T00:00:00Z"))
    async with running(store=store) as h:
        labels = {"kind": "Semaphore", "namespace": NS, "name": "s"}
        get = h.ctx.metrics.registry.get_sample_value
        assert h.status()["queueLength"] == 2, "c0 is granted; the others are not counted"
        assert get("konductor_waiters", labels) == 2
        store.remove(CLAIM, NS, "c1")
        await h.advance(1)
        assert h.status()["queueLength"] == 1
        assert get("konductor_waiters", labels) == 1
        # c2 is granted (its waiter deletes its claim only after the grant is written).
        raw = store.raw(SEMAPHORE, NS, "s")
        raw["status"]["holders"] = {"0": grant("c2", 12)}
        store.put(SEMAPHORE, raw)
        await h.advance(1)
        assert h.status()["queueLength"] == 1, "c0 is not granted any more: it waits again"
        store.remove(CLAIM, NS, "c0")
        store.remove(CLAIM, NS, "c2")
        await h.advance(1)
        assert h.status()["queueLength"] == 0
        assert h.status()["holders"] == {"0": grant("c2", 12)}, "counting never touches grants"


async def test_a_pass_due_only_for_its_claim_counts_waits_behind_reaping() -> None:
    store = FakeStore()
    store.put(SESSION, session())
    store.put(SEMAPHORE, semaphore(permits=1, **{"0": grant("c0", 11)}))
    async with running(store=store) as h:
        key = ("Semaphore", NS, "s")
        core = h.core
        assert not core._only_recount(key), "nothing due at all"
        core._recount[key] = h.clock.monotonic()  # its counts are stale, and due
        assert core._only_recount(key), "the background lane"
        core.ledger.ended((NS, "sess"))  # the session its grant names ended: reap first
        assert not core._only_recount(key)


async def test_a_claim_storm_costs_one_status_write_per_second() -> None:
    store = FakeStore()
    store.put(SESSION, session())
    store.put(SEMAPHORE, semaphore(permits=1))
    async with running(store=store) as h:
        store.put(CLAIM, claim("first"))
        await h.settle()
        assert h.status()["queueLength"] == 1, "a quiet object is counted at once"
        writes = count_writes(store)
        for i in range(50):
            store.put(CLAIM, claim(f"c{i}"))
            await h.advance(0.01)  # well spread: each one seen, queued and passed on its own
        assert count_writes(store) == writes, "within a second of the last count: no write"
        await h.advance(1)
        assert h.status()["queueLength"] == 51
        assert count_writes(store) == writes + 1
        get = h.ctx.metrics.registry.get_sample_value
        assert get("konductor_operator_status_writes_total", {"kind": "Semaphore", "why": "count"})
        for i in range(50):
            store.remove(CLAIM, NS, f"c{i}")
        await h.advance(1)
        assert h.status()["queueLength"] == 1
        assert count_writes(store) == writes + 2
        await h.advance(30)
        assert count_writes(store) == writes + 2, "nothing changed: nothing written"


async def test_claims_already_there_are_counted_once_listed() -> None:
    store = FakeStore()
    store.put(SESSION, session())
    raw = semaphore(permits=1)
    raw["status"]["queueLength"] = 7  # stale: left by an operator that went away
    store.put(SEMAPHORE, raw)
    for i in range(3):
        store.put(CLAIM, claim(f"c{i}"))
    async with running(store=store) as h:
        assert h.status()["queueLength"] == 3
        assert count_writes(store) == 1


# -- a state machine: holders renew or die at random; the reaper must never reap a live
# holder and must reap every dead one once its TTL has passed on the operator's clock.

TTL = 10


class ReaperMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.store: FakeStore = self.portal.call(FakeStore)
        self.portal.call(self.store.put, SEMAPHORE, semaphore(permits=100))
        # Entered and exited in one task of the portal's loop (task groups require it).
        self._cm = self.portal.wrap_async_context_manager(running(store=self.store))
        self.h: Harness = self._cm.__enter__()
        self.next = 0
        self.alive: set[str] = set()  # keys whose owner still renews
        self.last_renewal: dict[str, float] = {}  # operator-clock time of the last renewal

    def teardown(self) -> None:
        try:
            self._cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def _holders(self) -> dict[str, Any]:
        return dict(self.h.status().get("holders") or {})

    @rule()
    def grant(self) -> None:
        key = f"k{self.next}"
        self.next += 1
        raw = self.store.raw(SEMAPHORE, NS, "s")
        raw["status"]["holders"][key] = entry(key, 100 + self.next, ttl=TTL)
        # Every store change happens in the loop's thread: anyio events are not thread-safe.
        self.portal.call(self.store.put, SEMAPHORE, raw)
        self.portal.call(self.h.settle)
        self.alive.add(key)
        self.last_renewal[key] = self.h.clock.monotonic()

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.alive)))
        self.portal.call(self.h.renew, key)
        self.portal.call(self.h.settle)
        self.last_renewal[key] = self.h.clock.monotonic()

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def die(self, data: st.DataObject) -> None:
        self.alive.discard(data.draw(st.sampled_from(sorted(self.alive))))

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.9, 10.0, 15.0]))
    def advance(self, seconds: float) -> None:
        # Live owners renew within their TTL, as their Renewal would (at ttl/3 here).
        now = self.h.clock.monotonic()
        step = TTL / 3
        while seconds > 0:
            dt = min(step, seconds)
            self.portal.call(self.h.advance, dt)
            seconds -= dt
            now += dt
            for key in sorted(self.alive):
                if now - self.last_renewal[key] >= step:
                    self.portal.call(self.h.renew, key)
                    self.portal.call(self.h.settle)
                    self.last_renewal[key] = self.h.clock.monotonic()

    @invariant()
    def live_holders_are_never_reaped(self) -> None:
        holders = self._holders()
        assert self.alive <= set(holders), f"live holders reaped: {self.alive - set(holders)}"

    @invariant()
    def dead_holders_go_once_their_ttl_passed(self) -> None:
        holders = self._holders()
        now = self.h.clock.monotonic()
        for key in set(holders) - self.alive:
            assert now - self.last_renewal[key] < TTL, f"{key} outlived its TTL"


TestReaperMachine = ReaperMachine.TestCase
TestReaperMachine.settings = settings(max_examples=10, stateful_step_count=12, deadline=None)

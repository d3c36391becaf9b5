"""Semaphore on the real API server: layout, fairness, priority, preemption, burst, TTL,
cancellation, limit changes. Timing is driven by watch state and injected clocks, never
by sleeping and hoping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from konductor_sdk import Client, NotFoundError, PermitLost, WouldBlock
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.entries import ExpiryTracker, safety_margin
from konductor_sdk._kernel.errors import APIError
from konductor_sdk._kernel.objects import SEMAPHORE, KObject
from konductor_sdk._machines.semaphore import SEMAPHORE_FLAVOR, normalize_for
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Client]


async def until(client: Client, name: str, pred: Callable[[KObject], bool]) -> KObject:
    """Wait (on the shared watch) until the object satisfies ``pred``."""
    watch = await client.watch(SEMAPHORE, client.namespace)
    with anyio.fail_after(60):
        while True:
            changed = watch.next_change(name)
            obj = watch.get(name)
            if obj is not None and pred(obj):
                return obj
            await changed.wait()


def holders(obj: KObject) -> dict[str, Any]:
    return dict(obj.status.get("holders") or {})


def waiters(obj: KObject) -> dict[str, Any]:
    return dict(obj.status.get("waiters") or {})


def holder_ids(obj: KObject) -> set[str]:
    return {e["holder"] for e in holders(obj).values()}


def waiter_ids(obj: KObject) -> set[str]:
    return {e["holder"] for e in waiters(obj).values()}


async def test_grant_release_and_status_layout(client: Client) -> None:
    sem = Semaphore("gpu", permits=2, client=client)
    p1 = await sem.acquire()
    p2 = await sem.acquire(weight=1, priority=3)
    assert (p1.token, p2.token) == (1, 2)
    obj = await client.store.get(SEMAPHORE, client.namespace, "gpu")
    st = obj.status
    assert (st["inUse"], st["available"], st["phase"], st["holderCount"]) == (2, 0, "Full", 2)
    assert (st["fencingToken"], st["queueLength"], st["observedGeneration"]) == (2, 0, 1)
    entry = st["holders"][p2.key]
    assert entry["holder"] == client.identity.holder
    assert (entry["weight"], entry["priority"], entry["token"], entry["ttlSeconds"]) == (
        1,
        3,
        2,
        30,
    )
    assert {"acquiredAt", "renewedAt", "grantedAt", "renewCount"} <= set(entry)
    await p1.release()
    await p1.release()  # idempotent
    await p2.release()
    status = await sem.status()
    assert (status.in_use, status.available, status.phase, status.holders) == (0, 2, "Ready", ())
    assert sem.statistics().acquired == 2
    assert sem.statistics().released == 2
    assert repr(sem) == f"<Semaphore {client.namespace}/gpu permits=2>"


async def test_acquire_nowait_respects_the_queue_and_leaves_no_trace(
    client: Client, make_client: MakeClient
) -> None:
    sem = Semaphore("pool", permits=3, client=client)
    held = await sem.acquire(weight=2)
    big = Semaphore("pool", client=make_client("big"))
    async with anyio.create_task_group() as tg:

        async def wait_big() -> None:
            p = await big.acquire(weight=3)
            await p.release()

        tg.start_soon(wait_big)
        obj = await until(client, "pool", lambda o: "big" in waiter_ids(o))
        # One unit is free, but the weight-3 head is queued: a newcomer may not take it.
        with pytest.raises(WouldBlock):
            await sem.acquire_nowait(weight=1)
        after = await client.store.get(SEMAPHORE, client.namespace, "pool")
        assert after.resource_version == obj.resource_version  # nothing was written
        assert sem.statistics().would_block == 1
        await held.release()
    final = await client.store.get(SEMAPHORE, client.namespace, "pool")
    assert final.status["fencingToken"] == 2
    assert not holders(final)
    assert not waiters(final)


async def _ordered_grants(
    client: Client, make_client: MakeClient, specs: list[tuple[str, dict[str, Any]]]
) -> list[str]:
    """Hold the only permit, queue ``specs`` one after the other (each visible in the
    object before the next is started), release, and return the grant order."""
    sem = Semaphore("order", permits=1, client=client)
    first = await sem.acquire()
    order: list[str] = []

    async def wait(holder: str, kwargs: dict[str, Any]) -> None:
        async with Semaphore("order", client=make_client(holder)).hold(**kwargs) as p:
            order.append(f"{holder}:{p.token}")

    async with anyio.create_task_group() as tg:
        for holder, kwargs in specs:
            tg.start_soon(wait, holder, kwargs)
            await until(client, "order", lambda o, h=holder: h in waiter_ids(o))  # type: ignore[misc]
        await first.release()
    return order


async def test_fifo_within_a_priority(client: Client, make_client: MakeClient) -> None:
    order = await _ordered_grants(client, make_client, [(f"w{i}", {}) for i in range(5)])
    assert order == [f"w{i}:{i + 2}" for i in range(5)]


async def test_higher_priority_first_then_arrival(client: Client, make_client: MakeClient) -> None:
    specs = [
        ("low-a", {"priority": 0}),
        ("high", {"priority": 5}),
        ("low-b", {"priority": 0}),
        ("mid", {"priority": 2}),
    ]
    order = await _ordered_grants(client, make_client, specs)
    assert [o.split(":")[0] for o in order] == ["high", "mid", "low-a", "low-b"]


async def test_weighted_fit_without_starvation(client: Client, make_client: MakeClient) -> None:
    sem = Semaphore("weights", permits=4, client=client)
    held = await sem.acquire(weight=3)
    got: list[str] = []

    async def wait(holder: str, weight: int, release: anyio.Event) -> None:
        async with Semaphore("weights", client=make_client(holder)).hold(weight=weight):
            got.append(holder)
            await release.wait()

    go_big, go_small = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, "big", 4, go_big)
        await until(client, "weights", lambda o: "big" in waiter_ids(o))
        for i in range(3):
            tg.start_soon(wait, f"small{i}", 1, go_small)
            await until(client, "weights", lambda o, i=i: f"small{i}" in waiter_ids(o))  # type: ignore[misc]
        # One unit is free all along, yet no small request overtook the big head.
        obj = await client.store.get(SEMAPHORE, client.namespace, "weights")
        assert holder_ids(obj) == {client.identity.holder}
        assert got == []
        await held.release()
        await until(client, "weights", lambda o: holder_ids(o) == {"big"})
        go_big.set()
        # The three small ones fit together and are granted together.
        await until(client, "weights", lambda o: holder_ids(o) == {"small0", "small1", "small2"})
        assert got[0] == "big"
        go_small.set()
    assert sorted(got) == ["big", "small0", "small1", "small2"]


async def test_preemption_cancels_an_async_with_body(
    client: Client, make_client: MakeClient
) -> None:
    low = Semaphore("pre", permits=1, client=make_client("low"))
    outcome: list[BaseException] = []
    holding = anyio.Event()

    async def low_job() -> None:
        try:
            async with low.hold(preemptible=True, priority=0):
                holding.set()
                await anyio.sleep_forever()
        except PermitLost as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(low_job)
        await holding.wait()
        vip = Semaphore("pre", client=make_client("vip"))
        with anyio.fail_after(60):
            permit = await vip.acquire(priority=10)
    assert "preempted" in str(outcome[0])
    obj = await client.store.get(SEMAPHORE, client.namespace, "pre")
    assert holder_ids(obj) == {"vip"}
    assert permit.token == 2
    assert low.statistics().preempted == 1


async def test_preemption_signal_in_explicit_form_and_bound_by_ttl(
    client: Client, make_client: MakeClient
) -> None:
    clock = FakeClock()
    low = Semaphore("pre2", permits=1, client=make_client("low", clock=clock), ttl=3)
    permit = await low.acquire(preemptible=True)
    async with anyio.create_task_group() as tg:
        vip_permit: list[Any] = []

        async def vip() -> None:
            vip_permit.append(
                await Semaphore("pre2", client=make_client("vip")).acquire(priority=1)
            )

        tg.start_soon(vip)
        with anyio.fail_after(60):
            await permit.preempt_requested.wait()
        # The holder ignores the signal: it stops being renewed, and once its own deadline
        # passes it counts as lost and gives the unit back.
        assert not permit.lost
        clock.advance(3)
        with anyio.fail_after(60):
            reason = await permit.wait_lost()
        assert "preempted" in reason
    assert vip_permit[0].token == 2


async def test_burst_grant_is_time_bounded(client: Client, make_client: MakeClient) -> None:
    sem = Semaphore("burst", permits=1, burst=1, burst_seconds=2, client=client)
    regular = await sem.acquire()
    clock = FakeClock()
    bursty = Semaphore("burst", client=make_client("bursty", clock=clock))
    outcome: list[BaseException] = []
    holding = anyio.Event()
    info: list[Any] = []

    async def burst_job() -> None:
        try:
            async with bursty.hold(burst=True) as p:
                info.append(p)
                holding.set()
                await anyio.sleep_forever()
        except PermitLost as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(burst_job)
        with anyio.fail_after(60):
            await holding.wait()
        (p,) = info
        assert p.burst
        assert p.ttl_seconds == 2
        obj = await client.store.get(SEMAPHORE, client.namespace, "burst")
        assert (obj.status["inUse"], obj.status["burstInUse"]) == (2, 1)
        # Without burst=True nothing more is granted; burst units are all taken anyway.
        with pytest.raises(WouldBlock):
            await sem.acquire_nowait()
        with pytest.raises(WouldBlock):
            await sem.acquire_nowait(burst=True)
        clock.advance(2 - safety_margin(2) + 0.01)
    assert "time bound" in str(outcome[0])
    obj = await until(client, "burst", lambda o: len(holders(o)) == 1)
    assert set(holders(obj)) == {regular.key}
    await regular.release()


async def test_partitioned_holder_gives_up_before_an_observer_may_reap(
    client: Client, make_client: MakeClient
) -> None:
    clock = FakeClock()
    ttl = 3
    holder_client = make_client("partitioned", clock=clock)
    sem = Semaphore("ttl", permits=1, client=holder_client, ttl=ttl)
    await holder_client.connect()

    async def no_patch(*args: Any, **kwargs: Any) -> Any:
        raise APIError("renewal cannot reach the server")

    holder_client.store.patch = no_patch  # type: ignore[method-assign]
    observer = ExpiryTracker(clock)  # an operator whose clock runs at the same rate
    lost: list[BaseException] = []
    holding = anyio.Event()
    keys: list[str] = []

    async def job() -> None:
        try:
            async with sem.hold() as p:
                keys.append(p.key)
                holding.set()
                await anyio.sleep_forever()
        except PermitLost as exc:
            lost.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await holding.wait()
        obj = await until(client, "ttl", lambda o: bool(holders(o)))
        entry = holders(obj)[keys[0]]
        observer.observe(keys[0], entry["renewCount"], entry["ttlSeconds"])
        # Just past the holder's deadline, well before the observer's expiry.
        clock.advance(ttl - safety_margin(ttl) + 0.01)
    assert "could not renew" in str(lost[0])
    assert not observer.expired(keys[0])
    # It gave the permit back itself (a CAS write, which the partition did not block).
    await until(client, "ttl", lambda o: not holders(o))


async def test_dead_holder_is_reaped_after_its_ttl_and_the_waiter_granted(
    client: Client, make_client: MakeClient
) -> None:
    dead = make_client("dead")
    sem = Semaphore("reap", permits=1, client=dead, ttl=2)
    permit = await sem.acquire()
    await dead.aclose()  # the process dies: no renewal, no release
    clock = FakeClock()
    reaper = ExpiryTracker(clock)
    got: list[int] = []

    async def waiter() -> None:
        p = await Semaphore("reap", client=make_client("next")).acquire()
        got.append(p.token)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        obj = await until(client, "reap", lambda o: "next" in waiter_ids(o))
        entry = holders(obj)[permit.key]
        reaper.observe(permit.key, entry["renewCount"], entry["ttlSeconds"])
        clock.advance(1.9)
        assert not reaper.expired(permit.key)
        clock.advance(0.1)
        assert reaper.expired(permit.key)

        def reap(o: KObject) -> dict[str, Any]:
            st = dict(o.status)
            st["holders"] = {k: e for k, e in holders(o).items() if k != permit.key}
            return normalize_for(SEMAPHORE_FLAVOR)(o.spec, st)

        await update_status(client, SEMAPHORE, client.namespace, "reap", reap)
    assert got == [2]


async def test_limit_increase_wakes_waiters_at_once(
    client: Client, make_client: MakeClient
) -> None:
    sem = Semaphore("grow", permits=1, client=client)
    held = await sem.acquire()
    granted: list[str] = []

    async def wait(holder: str) -> None:
        await Semaphore("grow", client=make_client(holder)).acquire()
        granted.append(holder)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(wait, f"g{i}")
        await until(client, "grow", lambda o: len(waiters(o)) == 3)
        await sem.set_permits(4)
    assert sorted(granted) == ["g0", "g1", "g2"]
    # A spec edit by someone else (kubectl) writes no status: the waiters act themselves.
    granted.clear()
    async with anyio.create_task_group() as tg:
        for i in range(2):
            tg.start_soon(wait, f"h{i}")
        await until(client, "grow", lambda o: len(waiters(o)) == 2)
        await client.store.patch(SEMAPHORE, client.namespace, "grow", {"spec": {"permits": 6}})
    assert sorted(granted) == ["h0", "h1"]
    await held.release()


async def test_cancelled_while_waiting_leaves_the_queue(
    client: Client, make_client: MakeClient
) -> None:
    sem = Semaphore("cancel", permits=1, client=client)
    held = await sem.acquire()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(Semaphore("cancel", client=make_client("quitter")).acquire)
            await until(client, "cancel", lambda o: "quitter" in waiter_ids(o))
            scope.cancel()
    obj = await until(client, "cancel", lambda o: not waiters(o))
    assert holder_ids(obj) == {client.identity.holder}
    await held.release()
    obj = await until(client, "cancel", lambda o: not holders(o))
    assert obj.status["fencingToken"] == 1  # nothing was granted to the quitter


async def test_cancelled_right_after_grant_releases(
    client: Client, make_client: MakeClient
) -> None:
    sem = Semaphore("grant-cancel", permits=1, client=client)
    held = await sem.acquire()
    unlucky = make_client("unlucky")
    watch = await unlucky.watch(SEMAPHORE, unlucky.namespace)
    scope = anyio.CancelScope()
    granted_seen: list[int] = []

    def cancel_on_grant(etype: str, obj: KObject) -> None:
        # Runs in the watch task the moment the grant arrives, before the waiting task
        # has seen it: the acquire is cancelled with the permit already granted.
        for e in holders(obj).values():
            if e["holder"] == "unlucky" and not granted_seen:
                granted_seen.append(e["token"])
                scope.cancel()

    watch.add_listener(cancel_on_grant)
    results: list[int] = []

    async def unlucky_acquire() -> None:
        with scope:
            await Semaphore("grant-cancel", client=unlucky).acquire()
            results.append(1)

    async def next_acquire() -> None:
        p = await Semaphore("grant-cancel", client=make_client("next")).acquire()
        results.append(p.token)

    async with anyio.create_task_group() as tg:
        tg.start_soon(unlucky_acquire)
        await until(client, "grant-cancel", lambda o: "unlucky" in waiter_ids(o))
        tg.start_soon(next_acquire)
        await until(client, "grant-cancel", lambda o: "next" in waiter_ids(o))
        await held.release()
    assert scope.cancelled_caught
    assert granted_seen == [2]
    assert results == [3]  # the unlucky grant was given back and passed on


async def test_force_release_cancels_the_holders_body(
    client: Client, make_client: MakeClient
) -> None:
    victim = Semaphore("force", permits=1, client=make_client("victim"))
    lost: list[BaseException] = []
    holding = anyio.Event()

    async def job() -> None:
        try:
            async with victim:
                holding.set()
                await anyio.sleep_forever()
        except PermitLost as exc:
            lost.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await holding.wait()
        removed = await Semaphore("force", client=client).force_release("victim")
        assert len(removed) == 1
    assert "removed" in str(lost[0])


async def test_delete_fails_waiters_and_ends_holders(
    client: Client, make_client: MakeClient
) -> None:
    sem = Semaphore("doomed", permits=1, client=client)
    permit = await sem.acquire()
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await Semaphore("doomed", client=make_client("w")).acquire()
        except NotFoundError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until(client, "doomed", lambda o: bool(waiters(o)))
        await sem.delete()
        with anyio.fail_after(60):
            reason = await permit.wait_lost()
    assert "deleted" in reason
    assert errors
    assert "deleted" in str(errors[0])


async def test_thousand_waiting_tasks_share_one_watch(
    client: Client, make_client: MakeClient
) -> None:
    n = 1000
    sem = Semaphore("crowd", permits=1, client=client, ttl=120)
    first = await sem.acquire()
    permits: list[Any] = []

    async def wait() -> None:
        permits.append(await sem.acquire())

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(wait)
        await until(client, "crowd", lambda o: len(waiters(o)) == n)
        assert client.store.stats["watch_opened"] == 1
        await sem.set_permits(n + 1)
    assert len(permits) == n
    assert (sem.statistics().waited, sem.statistics().waiting) == (n, 0)
    assert sorted(p.token for p in permits) == list(range(2, n + 2))
    async with anyio.create_task_group() as tg:
        for p in [first, *permits]:
            tg.start_soon(p.release)
    obj = await until(client, "crowd", lambda o: not holders(o))
    assert obj.status["inUse"] == 0
    assert client.store.stats["watch_opened"] == 1
    # Group commit: thousands of state changes, far fewer writes.
    assert sem.statistics().writes < 100, sem.statistics()


async def test_ttl_zero_only_for_pods(
    client: Client, make_client: MakeClient, namespace: str
) -> None:
    from konductor_sdk import ConfigurationError, Identity, PodRef

    sem = Semaphore("podbound", permits=1, client=client, ttl=0)
    with pytest.raises(ConfigurationError, match="pod"):
        await sem.acquire()
    pod_client = make_client()
    pod_client.identity = Identity.for_pod(PodRef("trainer-0", namespace, "uid-1"))
    # The failed acquire wrote nothing, not even the object.
    with pytest.raises(NotFoundError):
        await client.store.get(SEMAPHORE, namespace, "podbound")
    permit = await Semaphore("podbound", permits=1, client=pod_client, ttl=0).acquire()
    obj = await client.store.get(SEMAPHORE, namespace, "podbound")
    entry = holders(obj)[permit.key]
    assert entry["ttlSeconds"] == 0
    assert entry["pod"] == {"name": "trainer-0", "namespace": namespace, "uid": "uid-1"}
    assert permit.deadline is None
    await permit.release()

"""Semaphore on the real server: layout, fairness, priority, preemption, burst, sessions,
cancellation, limit changes, closing a client while holding. Timing is driven by watch
state and injected clocks, never by sleeping and hoping."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from konductor_sdk import Client, NotFoundError, PermitLost, WouldBlock
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.errors import APIError
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, SESSION, KObject
from konductor_sdk._kernel.sessions import safety_margin, sessions_of
from konductor_sdk._machines import semaphore_plan as planning
from konductor_sdk.semaphore import Semaphore
from tests.integration._semaphore_helpers import (
    claim_holders,
    holder_ids,
    holders,
    until,
    until_queued,
    waiting_holders,
)

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Client]


async def queued(client: Client, name: str, *ids: str) -> list[KObject]:
    """Until exactly ``ids`` wait (not granted), in this order."""

    def ok(claims: list[KObject]) -> bool:
        obj = client.cached_watch(SEMAPHORE, client.namespace)
        cached = obj.get(name) if obj is not None else None
        return waiting_holders(cached, claims) == list(ids)

    await client.watch(SEMAPHORE, client.namespace)
    return await until_queued(client, name, ok)


async def claims_of(client: Client, name: str) -> list[KObject]:
    listed = await client.store.list(
        CLAIM, client.namespace, field_selector=target_selector(SEMAPHORE, name)
    )
    return list(listed.items)


async def test_grant_release_and_status_layout(client: Client) -> None:
    sem = Semaphore("gpu", permits=2, client=client)
    p1 = await sem.acquire()
    p2 = await sem.acquire(weight=1, priority=3)
    assert (p1.token, p2.token) == (1, 2)
    assert (p1.slots, p2.slots) == ((0,), (1,))
    assert (p1.key, p2.key) == ("0#1", "1#2")
    obj = await client.store.get(SEMAPHORE, client.namespace, "gpu")
    assert p1.fencing.resource == f"Semaphore/{client.namespace}/gpu@{obj.uid}"
    st = obj.status
    assert st["fencingToken"] == 2
    assert set(st["holders"]) == {"0", "1"}
    entry = st["holders"]["1"]
    assert entry["holder"] == client.identity.holder
    assert entry["creator"] == await client.whoami()
    assert entry["session"] == p1.session == p2.session
    assert (entry["weight"], entry["priority"], entry["token"]) == (1, 3, 2)
    assert "claim" not in entry  # uncontended: no claim was needed
    assert "grantedAt" in entry
    for aggregate in ("inUse", "phase", "queueLength"):
        assert aggregate not in st  # the operator's to write, not ours
    assert await claims_of(client, "gpu") == []
    session = await client.store.get(SESSION, client.namespace, p1.session)
    assert session.spec["ttlSeconds"] == 30
    await p1.release()
    await p1.release()  # idempotent
    await p2.release()
    status = await sem.status()
    assert (status.in_use, status.available, status.phase, status.holders) == (0, 2, "Ready", ())
    assert (status.fencing_token, status.waiters) == (2, ())
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
        await queued(client, "pool", "big")
        obj = await client.store.get(SEMAPHORE, client.namespace, "pool")
        # One unit is free, but the weight-3 head is queued: a newcomer may not take it.
        with pytest.raises(WouldBlock):
            await sem.acquire_nowait(weight=1)
        after = await client.store.get(SEMAPHORE, client.namespace, "pool")
        assert after.resource_version == obj.resource_version  # nothing was written
        assert len(await claims_of(client, "pool")) == 1  # and nothing was queued
        assert sem.statistics().would_block == 1
        await held.release()
    final = await client.store.get(SEMAPHORE, client.namespace, "pool")
    assert final.status["fencingToken"] == 2
    assert not holders(final)
    assert await claims_of(client, "pool") == []


async def _ordered_grants(
    client: Client, make_client: MakeClient, specs: list[tuple[str, dict[str, Any]]]
) -> list[str]:
    """Hold the only permit, queue ``specs`` one after the other (each visible in the
    queue before the next is started), release, and return the grant order."""
    sem = Semaphore("order", permits=1, client=client)
    first = await sem.acquire()
    order: list[str] = []

    async def wait(holder: str, kwargs: dict[str, Any]) -> None:
        async with Semaphore("order", client=make_client(holder)).hold(**kwargs) as p:
            order.append(f"{holder}:{p.token}")

    async with anyio.create_task_group() as tg:
        for i, (holder, kwargs) in enumerate(specs):
            tg.start_soon(wait, holder, kwargs)
            await until_queued(client, "order", lambda c, n=i + 1: len(c) == n)  # type: ignore[misc]
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
        async with Semaphore("weights", client=make_client(holder)).hold(weight=weight) as p:
            assert p.slots == tuple(range(p.slot, p.slot + weight))
            got.append(holder)
            await release.wait()

    go_big, go_small = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, "big", 4, go_big)
        await queued(client, "weights", "big")
        for i in range(3):
            tg.start_soon(wait, f"small{i}", 1, go_small)
            await queued(client, "weights", "big", *(f"small{j}" for j in range(i + 1)))
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
    assert not obj.status.get("preemptRequests")  # withdrawn by the write that granted it
    assert low.statistics().preempted == 1


async def test_an_ignored_preemption_request_bounds_the_grant_by_one_ttl(
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
        # The holder ignores the signal: its SDK marks the grant time-bounded (the
        # operator reaps it one TTL after seeing that), and gives it up itself before.
        obj = await until(client, "pre2", lambda o: "ttlSeconds" in holders(o).get("0", {}))
        assert holders(obj)["0"]["ttlSeconds"] == 3
        assert not permit.lost
        # Its session stays alive (renewed), but the grant's own bound passes.
        clock.advance(2)
        sessions = await client.watch(SESSION, client.namespace)
        renewed = sessions.get(permit.session)
        assert renewed is not None
        with anyio.fail_after(30):
            while True:
                changed = sessions.next_change(permit.session)
                seen = sessions.get(permit.session)
                # The second renewal after the jump was surely sent after it.
                if seen is not None and seen.spec["renewCount"] > renewed.spec["renewCount"] + 1:
                    break
                await changed.wait()
        clock.advance(1)
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
        entry = holders(obj)[str(p.slot)]
        assert (entry["burst"], entry["ttlSeconds"], entry["renewCount"]) == (True, 2, 0)
        assert (await sem.status()).in_use == 2
        # Without burst=True nothing more is granted; burst units are all taken anyway.
        with pytest.raises(WouldBlock):
            await sem.acquire_nowait()
        with pytest.raises(WouldBlock):
            await sem.acquire_nowait(burst=True)
        clock.advance(2 - safety_margin(2) + 0.01)
    assert "time bound" in str(outcome[0])
    obj = await until(client, "burst", lambda o: len(holders(o)) == 1)
    assert set(holders(obj)) == {str(regular.slot)}
    await regular.release()


async def test_a_partitioned_holder_gives_up_before_an_observer_may_reap(
    client: Client, make_client: MakeClient
) -> None:
    clock = FakeClock()
    ttl = 3
    holder_client = make_client("partitioned", clock=clock)
    sem = Semaphore("ttl", permits=1, client=holder_client, ttl=ttl)
    await holder_client.connect()
    real_patch = holder_client.store.patch

    async def renewals_fail(kind: Any, *args: Any, **kwargs: Any) -> Any:
        if kind == SESSION:
            raise APIError("the session renewal cannot reach the server")
        return await real_patch(kind, *args, **kwargs)

    holder_client.store.patch = renewals_fail  # type: ignore[method-assign]
    observer = ExpiryTracker(clock)  # an operator whose clock runs at the same rate
    lost: list[BaseException] = []
    holding = anyio.Event()
    sessions: list[str] = []

    async def job() -> None:
        try:
            async with sem.hold() as p:
                sessions.append(p.session)
                holding.set()
                await anyio.sleep_forever()
        except PermitLost as exc:
            lost.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await holding.wait()
        seen = await client.store.get(SESSION, client.namespace, sessions[0])
        observer.observe(sessions[0], seen.spec["renewCount"], seen.spec["ttlSeconds"])
        # Just past the holder's deadline, well before the observer's expiry.
        clock.advance(ttl - safety_margin(ttl) + 0.01)
    assert "session" in str(lost[0])
    assert not observer.expired(sessions[0])
    # It gave the permit back itself (the grant patch path is not partitioned).
    await until(client, "ttl", lambda o: not holders(o))


async def test_a_dead_holder_is_reaped_with_its_session_and_the_waiter_granted(
    client: Client, make_client: MakeClient
) -> None:
    dead = make_client("dead")
    permit = await Semaphore("reap", permits=1, client=dead, ttl=2).acquire()
    # The process dies: nothing renews its session, nothing releases.
    await dead.aclose()
    got: list[int] = []

    async def waiter() -> None:
        p = await Semaphore("reap", client=make_client("next")).acquire()
        got.append(p.token)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await queued(client, "reap", "next")
        # What the operator does once the session expired: delete it, then remove every
        # grant naming it (with override).
        await client.store.delete(SESSION, client.namespace, permit.session)
        obj = await client.store.get(SEMAPHORE, client.namespace, "reap")
        ops = [
            op
            for slot, e in holders(obj).items()
            if e["session"] == permit.session
            for op in planning.release_patch(int(slot), e["token"])
        ]
        await client.store.patch(
            SEMAPHORE, client.namespace, "reap", ops, patch_type="json", subresource="status"
        )
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
        await until_queued(client, "grow", lambda c: len(c) == 3)
        await sem.set_permits(4)
    assert sorted(granted) == ["g0", "g1", "g2"]
    # A spec edit by someone else (kubectl) writes no status: the waiters act themselves.
    granted.clear()
    async with anyio.create_task_group() as tg:
        for i in range(2):
            tg.start_soon(wait, f"h{i}")
        await until_queued(client, "grow", lambda c: {"h0", "h1"} <= set(claim_holders(c)))
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
            await queued(client, "cancel", "quitter")
            scope.cancel()
    assert await claims_of(client, "cancel") == []  # the claim was deleted, shielded
    await held.release()
    obj = await until(client, "cancel", lambda o: not holders(o))
    assert obj.status["fencingToken"] == 1  # nothing was granted to the quitter


async def test_cancelled_right_after_the_grant_gives_it_back(
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
        await queued(client, "grant-cancel", "unlucky")
        tg.start_soon(next_acquire)
        await queued(client, "grant-cancel", "unlucky", "next")
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
        assert removed == ("0#1",)
    assert "removed" in str(lost[0])
    assert victim.statistics().lost == 1


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
        await queued(client, "doomed", "w")
        await sem.delete()
        with anyio.fail_after(60):
            reason = await permit.wait_lost()
    assert "deleted" in reason
    assert errors
    assert "deleted" in str(errors[0])


async def test_thousand_waiting_tasks_share_two_watches_and_group_commit(
    client: Client, make_client: MakeClient
) -> None:
    n = 1000
    holder = make_client("holder")
    first = await Semaphore("crowd", permits=1, client=holder).acquire()
    sem = Semaphore("crowd", client=client, ttl=120)
    permits: list[Any] = []

    async def wait() -> None:
        permits.append(await sem.acquire())

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(wait)
        await until_queued(client, "crowd", lambda c: len(c) == n, seconds=240)
        # One watch of the semaphores, one of this semaphore's claims, whatever the crowd
        # (the server may end a busy watch: it resumes from where it was, hence "opened"
        # may exceed 2), and no reads or reviews per waiter.
        stats = client.store.stats
        assert stats["watch_opened"] < 20, stats
        assert stats["post"] == n + 2, stats  # the claims, one session, one whoami
        assert stats["get"] - stats["watch_opened"] < 10, stats
        await Semaphore("crowd", client=holder).set_permits(n + 1)
    assert len(permits) == n
    assert (sem.statistics().waited, sem.statistics().waiting) == (n, 0)
    assert sorted(p.token for p in permits) == list(range(2, n + 2))
    # Group commit: a thousand grants, a few dozen writes (each adds at most 64).
    assert sem.statistics().writes <= 40, sem.statistics()
    async with anyio.create_task_group() as tg:
        for p in [*permits]:
            tg.start_soon(p.release)
    await first.release()
    await until(client, "crowd", lambda o: not holders(o), seconds=120)


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
    session = await client.store.get(SESSION, namespace, permit.session)
    assert session.spec["ttlSeconds"] == 0
    assert session.spec["pod"] == {"name": "trainer-0", "namespace": namespace, "uid": "uid-1"}
    assert permit.deadline is None
    assert permit.ttl_seconds == 0
    await permit.release()


async def test_closing_the_client_keeps_an_explicit_permit_held(
    client: Client, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14 (2): a detached acquisition stays held, and nothing says it was lost."""
    detached = make_client("detached")
    permit = await Semaphore("detach", permits=1, client=detached, ttl=60).acquire()
    with caplog.at_level(logging.WARNING, logger="konductor_sdk"):
        await detached.aclose()
    assert not [r for r in caplog.records if "lost" in r.getMessage()]
    assert not permit.lost  # its session's deadline has not passed
    obj = await client.store.get(SEMAPHORE, client.namespace, "detach")
    assert holders(obj)["0"]["token"] == permit.token
    # The session is kept for it (it ends one ttl after its last renewal).
    await client.store.get(SESSION, client.namespace, permit.session)
    # Another process (the same user) releases it by its key, as `koncli release` does.
    assert await Semaphore("detach", client=client).force_release(permit.key) == (permit.key,)


async def test_a_waiter_frozen_past_its_session_never_gets_the_old_grant(
    client: Client, make_client: MakeClient
) -> None:
    """Issue 13 (1): a queued waiter whose session deadline passed while it was stopped
    (its clock jumps, as after SIGSTOP/SIGCONT) queues again under a fresh session; no
    body ever runs on a grant of the expired session."""
    holder = await Semaphore("frozen", permits=1, client=client).acquire()
    clock = FakeClock()
    sleeper = make_client("sleeper", clock=clock)
    first_session = (await sessions_of(sleeper).get(3)).name
    entered: list[tuple[str, bool]] = []

    async def job() -> None:
        async with Semaphore("frozen", client=sleeper, ttl=3).hold() as p:
            entered.append((p.session, p.lost))

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        claims = await queued(client, "frozen", "sleeper")
        assert claims[0].spec["session"] == first_session
        clock.advance(3)  # frozen past its session's deadline while queued
        # Its own process notices on resuming, and queues again under a new session.
        claims = await until_queued(
            client, "frozen", lambda c: [x.spec["session"] for x in c] not in ([first_session], [])
        )
        await holder.release()
    assert len(entered) == 1
    session, lost = entered[0]
    assert session != first_session
    assert not lost
    obj = await client.store.get(SEMAPHORE, client.namespace, "frozen")
    assert obj.status["fencingToken"] == 2  # the expired session was never granted


async def test_a_grant_from_the_queue_names_the_claims_session(
    client: Client, make_client: MakeClient
) -> None:
    """Issue 13 (4): the grant carries the waiter's liveness (its session), so a dead
    waiter's grant is reaped one session TTL after it stopped renewing, not two."""
    holder = await Semaphore("carry", permits=1, client=client).acquire()
    waiter = make_client("waiter")
    seen: dict[str, str] = {}

    async def wait() -> None:
        p = await Semaphore("carry", client=waiter).acquire()
        seen["permit"] = p.session

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        (claim,) = await queued(client, "carry", "waiter")
        seen["claim"] = claim.spec["session"]
        await holder.release()
    obj = await client.store.get(SEMAPHORE, client.namespace, "carry")
    (entry,) = holders(obj).values()
    assert entry["session"] == seen["claim"] == seen["permit"]
    assert entry["claim"] == claim.name
    # The claim is gone once granted: its place is no longer needed.
    await until_queued(client, "carry", lambda c: c == [])

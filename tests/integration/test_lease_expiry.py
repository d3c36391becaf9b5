"""Expiry on the real server: the holder always stops before a waiter may take over, and
wall-clock skew between them changes nothing.

Time is injected: each client gets its own FakeClock, advanced in lockstep by the test, so
"the TTL passed" is a fact the test controls rather than a sleep it hopes is long enough.
Renewals and watches still run in real time against the real API server.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from konductor_sdk import APIError, Client, LeadershipLost
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._kernel.sessions import safety_margin
from konductor_sdk._kernel.store import Store
from konductor_sdk.lease import HeldLease, Lease
from tests.integration._lease_helpers import has_candidate, observed, wait_for_candidates

MakeClient = Callable[..., Client]
TTL = 5


class Partition:
    """A store whose writes can be cut off, like a holder behind a network partition."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.cut = False
        self.stats = inner.stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def patch(self, *args: Any, **kwargs: Any) -> KObject:
        if self.cut:
            raise APIError("partitioned", status=0)
        return await self._inner.patch(*args, **kwargs)

    async def replace(self, *args: Any, **kwargs: Any) -> KObject:
        if self.cut:
            raise APIError("partitioned", status=0)
        return await self._inner.replace(*args, **kwargs)


async def derived(
    make_client: MakeClient, holder: str, clock: Any, store: type[Partition] | None = None
) -> tuple[Client, Partition | None]:
    """A client with its own identity and clock (and optionally a partitionable store)."""
    base = make_client(holder)
    await base.connect()
    wrapper = store(base.store) if store is not None else None
    c = Client(
        store=wrapper or base.store, namespace=base.namespace, identity=base.identity, clock=clock
    )
    return c, wrapper


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition that background tasks make true (bounded; no fixed sleeps)."""
    with anyio.fail_after(30):
        while not predicate():  # noqa: ASYNC110 - holder/waiter state has no event
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_holder_gives_up_before_a_waiter_may_take_over(make_client: MakeClient) -> None:
    h_clock, w_clock = FakeClock(), FakeClock(start=5000.0)
    h_client, partition = await derived(make_client, "holder", h_clock, Partition)
    w_client, _ = await derived(make_client, "waiter", w_clock)
    assert partition is not None
    events: list[str] = []
    got: list[HeldLease] = []
    try:

        async def hold() -> None:
            try:
                async with Lease("fail", ttl=TTL, client=h_client) as held:
                    events.append(f"holder acquired {held.token}")
                    try:
                        await anyio.sleep_forever()
                    finally:
                        events.append("holder body cancelled")
            except LeadershipLost:
                events.append("holder raised LeadershipLost")

        async def wait() -> None:
            got.append(await Lease("fail", ttl=TTL, client=w_client).acquire())
            events.append(f"waiter acquired {got[0].token}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await until(lambda: events == ["holder acquired 1"])
            tg.start_soon(wait)
            await wait_for_candidates(w_client, "fail", has_candidate("waiter"))
            partition.cut = True  # renewals fail from now on; the server keeps the entry
            margin = safety_margin(TTL)
            for clock in (h_clock, w_clock):
                clock.advance(TTL - margin / 2)  # past the holder's deadline, not the TTL
            await until(lambda: "holder raised LeadershipLost" in events)
            assert got == []
            obj = await w_client.store.get(LEASE, w_client.namespace, "fail")
            assert obj.status["holder"] == "holder"  # nobody took over yet
            for clock in (h_clock, w_clock):
                clock.advance(margin)  # now the TTL has passed on the waiter's clock too
            await until(lambda: bool(got))
        assert events == [
            "holder acquired 1",
            "holder body cancelled",
            "holder raised LeadershipLost",
            "waiter acquired 2",
        ]
        await got[0].release()
    finally:
        await h_client.aclose()
        await w_client.aclose()


class SkewedClock:
    """The real monotonic clock with a wall clock that is ``skew`` seconds off."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.skew)


@pytest.mark.anyio
async def test_wall_clock_skew_does_not_let_anyone_in_early(make_client: MakeClient) -> None:
    # The holder's wall clock is an hour behind (its renewedAt looks ancient to everyone);
    # the waiters' clocks are an hour ahead and behind. Only renewCount changes matter.
    h_client, _ = await derived(make_client, "slow-wall", SkewedClock(-3600))
    waiters = [
        (await derived(make_client, f"skewed{s:+d}", SkewedClock(s)))[0] for s in (3600, -7200)
    ]
    got: list[str] = []
    try:
        held = await Lease("skew", ttl=1, client=h_client).acquire()

        async def wait(c: Client) -> None:
            h = await Lease("skew", ttl=1, client=c).acquire()
            got.append(c.identity.holder)
            await h.release()

        async with anyio.create_task_group() as tg:
            for c in waiters:
                tg.start_soon(wait, c)
            # Many TTLs of real time pass while the holder keeps renewing.
            await until(lambda: held.renewals >= 7)
            assert got == []
            assert not held.lost
            await held.release()
        assert sorted(got) == ["skewed+3600", "skewed-7200"]
    finally:
        await h_client.aclose()
        for c in waiters:
            await c.aclose()


class SlowGrant:
    """A store whose first grant write "takes" longer than the TTL: the client's clock is
    advanced past the grant's deadline while the write is in flight (an etcd freeze, a
    stalled apiserver), and the write then succeeds."""

    def __init__(self, inner: Store, clock: FakeClock, seconds: float) -> None:
        self._inner = inner
        self._clock = clock
        self._seconds = seconds
        self.stats = inner.stats
        self.slowed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def patch(self, kind: Any, namespace: Any, name: Any, patch: Any, **kw: Any) -> KObject:
        grants = any(isinstance(op, dict) and op.get("path") == "/status/holders" for op in patch)
        obj = await self._inner.patch(kind, namespace, name, patch, **kw)
        if grants and not self.slowed:
            self.slowed += 1
            self._clock.advance(self._seconds)
        return obj


@pytest.mark.anyio
async def test_a_grant_that_comes_back_after_its_deadline_is_never_handed_out(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()
    base = make_client("slow")
    await base.connect()
    store = SlowGrant(base.store, clock, TTL + 1)
    client = Client(store=store, namespace=base.namespace, identity=base.identity, clock=clock)
    observer = make_client("observer")
    try:
        lease = Lease("slow-grant", ttl=TTL, client=client)
        await lease.create()
        async with observed(observer, "slow-grant") as history:
            with anyio.fail_after(30):
                held = await lease.acquire()
            assert not held.lost
            await held.release()
        # Token 1 was written, came back dead, and was given back; the caller got token 2.
        assert store.slowed == 1
        assert held.token == 2
        assert history.grants == [("slow", 1), ("slow", 2)]
        assert history.violations == []
        stats = lease.statistics()
        assert (stats.acquisitions, stats.releases, stats.losses) == (1, 1, 0)
    finally:
        await client.aclose()

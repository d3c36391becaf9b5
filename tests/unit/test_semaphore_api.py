"""The public surface without a server: argument checks, reprs, statistics, and a
permit's loss computed from the clock on access."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from konductor_sdk import Client, ConfigurationError, Identity
from konductor_sdk._engines.permit import Permit
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.sessions import Session, safety_margin
from konductor_sdk.fencing import Fence, FencedOut
from konductor_sdk.mutex import Mutex
from konductor_sdk.rwmutex import RWMutex
from konductor_sdk.semaphore import Semaphore
from konductor_sdk.sync import semaphore as sync


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Semaphore("x", permits=0), "permits"),
        (lambda: Semaphore("x", permits=2.5), "permits"),  # type: ignore[arg-type]
        (lambda: Semaphore("x", permits=True), "permits"),
        (lambda: Semaphore("x", permits=1_000_001), "permits"),
        (lambda: Semaphore("x", burst=-1), "burst"),
        (lambda: Semaphore("x", burst_seconds=86_401), "burst_seconds"),
        (lambda: Semaphore("x", ttl=0.5), "ttl"),  # type: ignore[arg-type]
        (lambda: Semaphore("x", ttl=True), "ttl"),
        (lambda: Semaphore("x", ttl=-1), "ttl"),
        (lambda: Semaphore("UPPER"), "name"),
        (lambda: Semaphore(""), "name"),
        (lambda: Semaphore("x", namespace="a" * 64), "namespace"),
        (lambda: Semaphore("x", namespace="a.b"), "namespace"),
        (lambda: Semaphore("x").hold(weight=0), "weight"),
        (lambda: Semaphore("x").hold(weight=2_000_001), "weight"),
        (lambda: Semaphore("x").hold(priority=2_000_000), "priority"),
        (lambda: Semaphore("x").hold(priority=1.5), "priority"),  # type: ignore[arg-type]
        (lambda: Semaphore("x").hold(ttl=-1), "ttl"),
        (lambda: Semaphore("x").hold(ttl=86_401), "ttl"),
        (lambda: Mutex("x", ttl=100_000), "ttl"),
        (lambda: Mutex("x").hold(priority="high"), "priority"),  # type: ignore[arg-type]
        (lambda: RWMutex("x", max_readers=4097), "max_readers"),
        (lambda: RWMutex("x", max_readers=0), "max_readers"),
        (lambda: RWMutex("x").read(ttl=-3), "ttl"),
        (lambda: sync.Semaphore("x").hold(weight=-1), "weight"),
    ],
)
def test_bad_arguments_fail_at_once_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{field}"):
        make()


def test_whole_number_floats_are_accepted_like_everywhere() -> None:
    sem = Semaphore("x", permits=3.0, ttl=5.0)  # type: ignore[arg-type]
    assert repr(sem) == "<Semaphore (default)/x permits=3>"


def test_reprs_and_statistics_without_any_io() -> None:
    sem = Semaphore("gpu", permits=4, namespace="ml")
    assert repr(sem) == "<Semaphore ml/gpu permits=4>"
    assert repr(Semaphore("gpu")) == "<Semaphore (default)/gpu permits=(existing)>"
    assert repr(Mutex("m", namespace="ml")) == "<Mutex ml/m>"
    assert repr(RWMutex("r", namespace="ml")) == "<RWMutex ml/r>"
    stats = sem.statistics()
    assert (stats.acquired, stats.writes, stats.waiting, stats.lost) == (0, 0, 0, 0)
    with pytest.raises(AttributeError):
        stats.acquired = 1  # type: ignore[misc]


def session(client: Client, ttl: int, sent: float) -> Session:
    obj = KObject({"metadata": {"name": "sess-1", "uid": "u1"}})
    return Session(client, obj, ttl, sent)


def permit(client: Client, sess: Session, **kw: Any) -> Permit:
    released: list[int] = []

    async def release(p: Permit) -> None:
        released.append(p.token)

    defaults: dict[str, Any] = {
        "resource": "Semaphore/ns/x@uid",
        "slot": 2,
        "weight": 2,
        "token": 9,
        "mode": None,
        "burst": False,
    }
    return Permit(
        **{**defaults, **kw}, session=sess, clock=client.clock, release=release, granted_rv=3
    )


@pytest.mark.anyio
async def test_a_permit_is_lost_the_instant_its_session_deadline_passes() -> None:
    clock = FakeClock()
    client = Client(namespace="ns", identity=Identity("me"), clock=clock)
    sess = session(client, 10, clock.monotonic())
    p = permit(client, sess)
    assert (p.key, p.slots, p.session, p.ttl_seconds) == ("2#9", (2, 3), "sess-1", 10)
    assert p.fencing.slots == (2, 3)
    assert p.fencing.value == 9
    assert p.deadline == clock.monotonic() + 10 - safety_margin(10)
    heard: list[str] = []
    p.on_end(heard.append)
    assert not p.lost
    clock.advance(10 - safety_margin(10))
    assert p.lost  # read from the clock: no task had to notice
    assert "session" in (p.lost_reason or "")
    assert heard == [p.lost_reason]
    with anyio.fail_after(1):
        assert await p.wait_lost() == p.lost_reason


@pytest.mark.anyio
async def test_a_burst_permit_ends_at_its_own_bound_and_release_is_idempotent() -> None:
    clock = FakeClock()
    client = Client(namespace="ns", identity=Identity("me"), clock=clock)
    sess = session(client, 30, clock.monotonic())
    p = permit(client, sess, burst=True, deadline=clock.monotonic() + 2, ttl_seconds=2)
    assert p.deadline == clock.monotonic() + 2
    clock.advance(2)
    assert p.lost
    assert "time bound" in (p.lost_reason or "")
    await p.release()
    await p.release()
    assert p.released


@pytest.mark.anyio
async def test_released_permits_are_not_lost_and_preemption_is_signalled_once() -> None:
    clock = FakeClock()
    client = Client(namespace="ns", identity=Identity("me"), clock=clock)
    sess = session(client, 10, clock.monotonic())
    p = permit(client, sess)
    heard: list[str] = []
    p.on_end(heard.append)
    p.mark_preempted()
    p.mark_preempted()
    assert p.preempt_requested.is_set()
    assert heard == ["preempted by a higher-priority waiter"]
    await p.release()
    clock.advance(100)
    assert not p.lost  # given back before its session ended: not lost


def test_per_slot_fencing_accepts_concurrent_holders_and_refuses_stale_ones() -> None:
    from konductor_sdk.fencing import FencingToken

    fence = Fence()
    r = "Semaphore/ns/pool@uid"
    a, b, c = FencingToken(r, (0,), 1), FencingToken(r, (1,), 2), FencingToken(r, (2,), 3)
    for t in (a, b, c, a, c, b):  # three valid holders at once, any interleaving
        fence.admit(t)
    fence.admit(FencingToken(r, (0,), 4))  # slot 0 granted again
    with pytest.raises(FencedOut):
        fence.admit(a)  # the old holder of slot 0 is stale now
    fence.admit(b)  # the others are not

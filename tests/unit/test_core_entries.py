from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.entries import ExpiryTracker, Renewal, new_entry, safety_margin
from konductor_sdk._kernel.objects import SEMAPHORE, json_pointer


def test_expiry_counts_from_when_the_observer_saw_the_change() -> None:
    clock = FakeClock()
    tracker = ExpiryTracker(clock)
    tracker.observe("k", 0, 10)
    clock.advance(9.9)
    assert not tracker.expired("k")
    tracker.observe("k", 0, 10)  # same renewCount seen again: the stopwatch keeps running
    clock.advance(0.1)
    assert tracker.expired("k")


def test_a_renewal_restarts_the_observer_stopwatch() -> None:
    clock = FakeClock()
    tracker = ExpiryTracker(clock)
    tracker.observe("k", 0, 10)
    clock.advance(9)
    tracker.observe("k", 1, 10)
    clock.advance(9)
    assert not tracker.expired("k")
    clock.advance(1)
    assert tracker.expired("k")


def test_wall_clock_skew_does_not_matter() -> None:
    # The writer's wall clock is an hour ahead; expiry only looks at the observer's
    # monotonic clock and the renew counter, so nothing expires early.
    writer = FakeClock(skew=3600)
    observer = FakeClock()
    client = Client(identity=Identity(holder="w"), clock=writer)
    entry = new_entry(client, 5)
    tracker = ExpiryTracker(observer)
    tracker.observe("k", entry["renewCount"], entry["ttlSeconds"])
    observer.advance(4.9)
    assert not tracker.expired("k")


def test_unobserved_entries_never_count_as_expired() -> None:
    tracker = ExpiryTracker(FakeClock())
    assert not tracker.expired("nope")
    assert tracker.expires_at("nope") is None


def test_retain_forgets_removed_entries() -> None:
    tracker = ExpiryTracker(FakeClock())
    for key in "abc":
        tracker.observe(key, 0, 1)
    tracker.retain(["a"])
    assert len(tracker) == 1


@given(ttl=st.floats(min_value=1, max_value=86_400))
def test_owner_gives_up_before_any_observer_may_reap(ttl: float) -> None:
    # The owner sends a renewal at t=0; an observer can only see it at t>=0. The owner's
    # deadline must come strictly before the earliest observer expiry (0 + ttl).
    margin = safety_margin(ttl)
    assert 0 < margin < ttl
    client = Client(identity=Identity(holder="h"), clock=FakeClock(start=0))
    r = Renewal(client, SEMAPHORE, "ns", "s", ("status", "holders", "k"), {}, ttl, 0.0)
    assert r.deadline < ttl


def test_renewal_patch_tests_ownership_then_bumps_counter() -> None:
    client = Client(identity=Identity(holder="h"), clock=FakeClock())
    r = Renewal(
        client,
        SEMAPHORE,
        "ns",
        "s",
        ("status", "holders", "h#1/x"),
        {"holder": "h", "token": 7},
        30,
        0.0,
        renew_count=4,
    )
    ops: list[dict[str, Any]] = r.ops()
    ptr = "/status/holders/h#1~1x"
    assert ops[0] == {"op": "test", "path": f"{ptr}/holder", "value": "h"}
    assert ops[1] == {"op": "test", "path": f"{ptr}/token", "value": 7}
    assert ops[2] == {"op": "replace", "path": f"{ptr}/renewCount", "value": 5}
    assert ops[3]["path"] == f"{ptr}/renewedAt"


@pytest.mark.parametrize(
    ("parts", "pointer"),
    [(("a", "b"), "/a/b"), (("a/b",), "/a~1b"), (("m~n",), "/m~0n"), (("~/",), "/~0~1")],
)
def test_json_pointer_escapes(parts: tuple[str, ...], pointer: str) -> None:
    assert json_pointer(*parts) == pointer

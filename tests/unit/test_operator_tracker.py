"""ObjectTracker: expiry on the operator's own clock, timers, pod index, change reports."""

from __future__ import annotations

from typing import Any

from konductor_operator._tracker import ObjectTracker
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._machines.rules import KindRules, registered

SEM = registered()["Semaphore"]
BAR = registered()["Barrier"]
KEY = ("Semaphore", "ns", "s")


def entry(token: int, renew: int = 0, ttl: Any = 10, **extra: Any) -> dict[str, Any]:
    return {
        "holder": f"h{token}",
        "token": token,
        "ttlSeconds": ttl,
        "renewCount": renew,
        "acquiredAt": "t0",
        **extra,
    }


def sem(uid: str = "u", rv: int = 1, **holders: dict[str, Any]) -> KObject:
    return KObject(
        {
            "metadata": {"name": "s", "namespace": "ns", "uid": uid, "resourceVersion": str(rv)},
            "spec": {"permits": 5},
            "status": {"holders": holders, "waiters": {}},
        }
    )


def test_expiry_counts_from_when_the_marker_was_last_seen_changing() -> None:
    clock = FakeClock()
    t = ObjectTracker(clock)
    t.observe(SEM, sem(a=entry(1)))
    assert t.deadline(KEY) == clock.monotonic() + 10
    clock.advance(9.9)
    assert t.expired(KEY) == []
    t.observe(SEM, sem(a=entry(1)))  # same marker again (another field changed): no restart
    clock.advance(0.1)
    assert [r.entry for r in t.expired(KEY)] == [("holders", "a")]
    t.observe(SEM, sem(a=entry(1, renew=1)))  # renewed: the clock restarts
    assert t.expired(KEY) == []
    assert t.deadline(KEY) == clock.monotonic() + 10


def test_wall_clock_fields_never_matter() -> None:
    clock = FakeClock(skew=3600)
    t = ObjectTracker(clock)
    t.observe(SEM, sem(a=entry(1, renewedAt="1970-01-01T00:00:00Z")))
    clock.advance(5)
    t.observe(SEM, sem(a=entry(1, renew=1, renewedAt="2100-01-01T00:00:00Z")))
    clock.advance(9)
    assert t.expired(KEY) == []


def test_ttl_zero_entries_never_expire_by_time() -> None:
    clock = FakeClock()
    t = ObjectTracker(clock)
    t.observe(SEM, sem(a=entry(1, ttl=0, pod={"name": "p", "namespace": "ns", "uid": "x"})))
    clock.advance(10**6)
    assert t.expired(KEY) == []
    assert t.deadline(KEY) is None
    assert t.objects_of_pod(("ns", "p")) == {KEY}


def test_recreated_object_starts_fresh_and_first_observation_is_flagged() -> None:
    clock = FakeClock()
    t = ObjectTracker(clock)
    assert t.observe(SEM, sem(a=entry(1))).first
    clock.advance(8)
    change = t.observe(SEM, sem(uid="other", a=entry(1)))
    assert change.first
    clock.advance(8)
    assert t.expired(KEY) == []


def test_changes_report_added_removed_and_phase() -> None:
    t = ObjectTracker(FakeClock())
    t.observe(SEM, sem(a=entry(1)))
    change = t.observe(SEM, sem(b=entry(2)))
    assert not change.first
    assert [i for i, _ in change.added] == [("holders", "b")]
    assert [i for i, _ in change.removed] == [("holders", "a")]


def test_pod_index_follows_entries_and_defaults_to_the_object_namespace() -> None:
    t = ObjectTracker(FakeClock())
    t.observe(SEM, sem(a=entry(1, pod={"name": "p", "uid": "1"})))
    assert t.objects_of_pod(("ns", "p")) == {KEY}
    t.observe(SEM, sem(a=entry(1, pod={"name": "q", "namespace": "other", "uid": "2"})))
    assert t.objects_of_pod(("ns", "p")) == set()
    assert t.pods() == {("other", "q")}
    t.forget(KEY)
    assert t.pods() == set()
    assert KEY not in t


def barrier(uid: str, generation: int, timeout: float, arrivals: int) -> KObject:
    return KObject(
        {
            "metadata": {"name": "b", "namespace": "ns", "uid": uid, "resourceVersion": "1"},
            "spec": {"expected": 3, "timeoutSeconds": timeout},
            "status": {
                "generation": generation,
                "phase": "Waiting",
                "arrived": arrivals,
                "arrivedBy": {"u": arrivals} if arrivals else {},
                "nextIndex": arrivals,
            },
        }
    )


def test_timeout_stopwatch_starts_at_first_sight_of_an_episode() -> None:
    clock = FakeClock()
    t = ObjectTracker(clock)
    key = ("Barrier", "ns", "b")
    rules: KindRules = BAR
    assert rules.kind == BARRIER
    grace = 1.5  # the operator fails a timed-out generation after the waiters would
    t.observe(rules, barrier("u", 1, 30, 0))  # nobody arrived: no timeout runs
    assert t.timeout_due(key) is None
    assert t.deadline(key) is None
    t.observe(rules, barrier("u", 1, 30, 1))
    start = clock.monotonic()
    clock.advance(20)
    t.observe(rules, barrier("u", 1, 30, 2))  # same episode: the stopwatch keeps running
    assert t.deadline(key) == start + 30 + grace
    clock.advance(10 + grace)
    assert t.timeout_due(key) == ("u", 1)
    t.mark_timeout_handled(key, ("u", 1))
    assert t.timeout_due(key) is None
    t.observe(rules, barrier("u", 2, 30, 1))  # a new generation: a new stopwatch
    assert t.timeout_due(key) is None
    clock.advance(30 + grace)
    assert t.timeout_due(key) == ("u", 2)


def test_renewals_do_not_reshape_but_spec_entries_and_fields_do() -> None:
    t = ObjectTracker(FakeClock())
    assert t.observe(SEM, sem(a=entry(1))).reshaped, "first sight"
    assert not t.observe(SEM, sem(a=entry(1, renew=1))).reshaped, "a renewal"
    assert t.observe(SEM, sem(a=entry(1, renew=1), b=entry(2))).reshaped, "an entry added"
    raw = dict(sem(a=entry(1, renew=1), b=entry(2)).raw)
    raw["status"] = {**raw["status"], "inUse": 99}
    assert t.observe(SEM, KObject(raw)).reshaped, "a derived field changed"
    raw["metadata"] = {**raw["metadata"], "generation": 2}
    assert t.observe(SEM, KObject(raw)).reshaped, "the spec changed"
    assert not t.observe(SEM, KObject(raw)).reshaped, "nothing changed"

"""The pure state of the semaphore family, example by example (no server)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from konductor_sdk import ConfigurationError, WouldBlock
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, SEMAPHORE
from konductor_sdk._machines import semaphore as st
from konductor_sdk._machines.rules import registered

SEM = st.SEMAPHORE_FLAVOR
NOW = "2026-01-01T00:00:00.000000Z"


def entry(weight: int = 1, priority: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "holder": "h",
        "ttlSeconds": 30,
        "renewCount": 0,
        "weight": weight,
        "priority": priority,
        "preemptible": False,
        **extra,
    }


def request(
    status: st.Status, key: str, spec: dict[str, Any], *, nowait: bool = False, **kw: Any
) -> None:
    st.request_in_place(SEM, spec, status, key, entry(**kw), now=NOW, nowait=nowait, what="t")


def holders(status: st.Status) -> set[str]:
    return set(status["holders"])


def test_grants_until_full_then_queues_in_order() -> None:
    spec = {"permits": 3}
    s: st.Status = {}
    for key in "abcd":
        request(s, key, spec)
    assert holders(s) == {"a", "b", "c"}
    assert [k for k, _ in st.queue(s)] == ["d"]
    assert (s["inUse"], s["available"], s["phase"], s["queueLength"]) == (3, 0, "Full", 1)
    assert [s["holders"][k]["token"] for k in "abc"] == [1, 2, 3]


def test_release_promotes_fifo_within_priority() -> None:
    spec = {"permits": 1}
    s: st.Status = {}
    for key in "abc":
        request(s, key, spec)
    st.release_in_place(s, "a")
    st.settle_in_place(SEM, spec, s)
    assert holders(s) == {"b"}
    st.release_in_place(s, "b")
    st.settle_in_place(SEM, spec, s)
    assert holders(s) == {"c"}
    assert s["holders"]["c"]["token"] == 3


def test_higher_priority_is_served_first() -> None:
    spec = {"permits": 1}
    s: st.Status = {}
    request(s, "holder", spec)
    request(s, "low", spec, priority=0)
    request(s, "high", spec, priority=5)
    request(s, "mid", spec, priority=2)
    assert [k for k, _ in st.queue(s)] == ["high", "mid", "low"]
    st.release_in_place(s, "holder")
    st.settle_in_place(SEM, spec, s)
    assert holders(s) == {"high"}


def test_large_head_blocks_smaller_later_waiters() -> None:
    # No starvation: the weight-3 head is not overtaken by weight-1 requests behind it.
    spec = {"permits": 3}
    s: st.Status = {}
    request(s, "a", spec, weight=2)
    request(s, "big", spec, weight=3)
    request(s, "small", spec, weight=1)
    assert holders(s) == {"a"}
    assert st.plan(SEM, spec, s).head == "big"
    st.release_in_place(s, "a")
    st.settle_in_place(SEM, spec, s)
    assert holders(s) == {"big"}


def test_prefix_of_fitting_waiters_is_promoted_together() -> None:
    spec = {"permits": 4}
    s: st.Status = {}
    request(s, "all", spec, weight=4)
    for key in "xyz":
        request(s, key, spec, weight=1)
    st.release_in_place(s, "all")
    plan = st.plan(SEM, spec, s)
    assert plan.promote == ("x", "y", "z")
    assert all(plan.needs_write_by(k) for k in "xyz")
    st.settle_in_place(SEM, spec, s)
    assert holders(s) == {"x", "y", "z"}
    assert s["available"] == 1


def test_nowait_raises_and_never_overtakes() -> None:
    spec = {"permits": 2}
    s: st.Status = {}
    request(s, "a", spec, weight=2)
    request(s, "w", spec, weight=1)
    st.release_in_place(s, "a")
    # Unsettled on purpose: "w" is owed the unit; a nowait newcomer is settled behind it.
    trial = copy.deepcopy(s)
    request(trial, "n", spec, nowait=False)
    assert holders(trial) == {"w", "n"}
    s2: st.Status = {}
    request(s2, "a", spec, weight=2)
    with pytest.raises(WouldBlock):
        request(s2, "n", spec, nowait=True)


def test_weight_above_limit_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"weight must be <= 2.*got 3"):
        request({}, "a", {"permits": 2}, weight=3)
    # ...unless it fits into permits + burst and the request accepts burst.
    s: st.Status = {}
    request(s, "a", {"permits": 2, "burst": 1}, weight=3, allowBurst=True)
    assert s["holders"]["a"]["burst"] is True


def test_waiter_that_can_no_longer_fit_is_skipped_not_blocking() -> None:
    spec = {"permits": 4}
    s: st.Status = {}
    request(s, "hold", spec, weight=4)
    request(s, "big", spec, weight=4)
    request(s, "small", spec, weight=1)
    lowered = {"permits": 2}
    st.release_in_place(s, "hold")
    st.settle_in_place(SEM, lowered, s)
    assert holders(s) == {"small"}
    assert "big" in s["waiters"]


def test_lowering_the_limit_revokes_nothing() -> None:
    s: st.Status = {}
    for key in "abc":
        request(s, key, {"permits": 3})
    st.settle_in_place(SEM, {"permits": 1}, s)
    assert holders(s) == {"a", "b", "c"}
    assert (s["inUse"], s["available"], s["phase"]) == (3, 0, "Full")


def test_preemption_asks_lowest_priority_newest_first_and_only_if_enough() -> None:
    spec = {"permits": 3}
    s: st.Status = {}
    request(s, "p0-old", spec, priority=0, preemptible=True)
    request(s, "p0-new", spec, priority=0, preemptible=True)
    request(s, "keep", spec, priority=0, preemptible=False)
    request(s, "vip", spec, priority=9, weight=1)
    assert s["holders"]["p0-new"].get("preemptRequested") is True
    assert not s["holders"]["p0-old"].get("preemptRequested")
    # A request for 3 units cannot be satisfied by the two preemptible holders alone:
    # asking them would kill work in vain.
    s2: st.Status = {}
    request(s2, "a", spec, preemptible=True)
    request(s2, "b", spec, preemptible=True)
    request(s2, "keep", spec)
    request(s2, "vip", spec, priority=9, weight=3)
    assert not any(e.get("preemptRequested") for e in s2["holders"].values())


def test_preemption_needs_strictly_higher_priority() -> None:
    spec = {"permits": 1}
    s: st.Status = {}
    request(s, "a", spec, priority=3, preemptible=True)
    request(s, "b", spec, priority=3)
    assert not s["holders"]["a"].get("preemptRequested")
    request(s, "c", spec, priority=4)
    assert s["holders"]["a"]["preemptRequested"] is True


def test_burst_is_self_granted_only_and_time_bounded() -> None:
    spec = {"permits": 2, "burst": 2, "burstSeconds": 20}
    s: st.Status = {}
    request(s, "a", spec, weight=2)
    request(s, "b", spec, weight=1, allowBurst=True)
    held = s["holders"]["b"]
    assert held["burst"] is True
    assert held["ttlSeconds"] == 20  # min(ttl 30, burstSeconds 20), never renewed
    assert (s["inUse"], s["burstInUse"], s["available"]) == (3, 1, 0)
    # A waiter that did not opt in does not get burst units.
    request(s, "c", spec, weight=1)
    assert "c" in s["waiters"]
    # Settling by someone else never grants burst (the owner must time it).
    s2: st.Status = {}
    request(s2, "a", spec, weight=2)
    request(s2, "h", spec, weight=2)  # a head without burst blocks...
    s2["waiters"]["h"]["allowBurst"] = True  # ...then turns burst-eligible (spec edit)
    st.settle_in_place(SEM, spec, s2)
    assert "h" in s2["waiters"]
    assert st.plan(SEM, spec, s2).needs_write_by("h")
    st.self_grant_in_place(SEM, spec, s2, "h", now=NOW)
    assert s2["holders"]["h"]["burst"] is True


def test_regular_grants_do_not_use_burst_room() -> None:
    spec = {"permits": 2, "burst": 5}
    s: st.Status = {}
    request(s, "a", spec, weight=2)
    request(s, "b", spec, weight=1)
    assert "b" in s["waiters"]


def test_release_checks_token_and_force_release_by_holder() -> None:
    spec = {"permits": 2}
    s: st.Status = {}
    request(s, "a", spec)
    assert not st.release_in_place(s, "a", token=99)
    assert st.release_in_place(s, "a", token=1)
    request(s, "b", spec)
    s["holders"]["b"]["holder"] = "dead-pod:uid"
    assert st.force_release_in_place(s, "dead-pod:uid") == ("b",)
    assert st.force_release_in_place(s, "nobody") == ()


def test_request_is_idempotent_per_key() -> None:
    spec = {"permits": 1}
    s: st.Status = {}
    request(s, "a", spec)
    before = copy.deepcopy(s)
    request(s, "a", spec)
    assert s == before


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"holders": None, "waiters": None},
        {"holders": {"x": {"weight": "lots"}}, "fencingToken": "NaN"},
        {"waiters": {"w": {}}},
    ],
)
def test_normalize_is_total_and_idempotent(status: dict[str, Any]) -> None:
    for flavor in st.FLAVORS.values():
        norm = st.normalize_for(flavor)
        once = norm({"permits": "?"}, copy.deepcopy(status))
        assert norm({"permits": "?"}, copy.deepcopy(once)) == once


def test_mutex_and_rwmutex_flavors() -> None:
    m = st.MUTEX_FLAVOR
    s: st.Status = {}
    st.request_in_place(m, {}, s, "a", entry(), now=NOW, nowait=False, what="m")
    st.request_in_place(m, {}, s, "b", entry(), now=NOW, nowait=False, what="m")
    assert (s["phase"], s["currentHolder"], s["queueLength"]) == ("Locked", "h", 1)

    rw = st.RWMUTEX_FLAVOR
    spec = {"maxReaders": 3}
    r: st.Status = {}

    def req(key: str, mode: str) -> None:
        e = {**entry(), "mode": mode}
        del e["weight"]
        st.request_in_place(rw, spec, r, key, e, now=NOW, nowait=False, what="rw")

    req("r1", "read")
    req("r2", "read")
    req("w", "write")
    req("r3", "read")  # arrives after a waiting writer: waits behind it
    assert holders(r) == {"r1", "r2"}
    assert (r["phase"], r["readers"]) == ("Reading", 2)
    for key in ("r1", "r2"):
        st.release_in_place(r, key)
    st.settle_in_place(rw, spec, r)
    assert holders(r) == {"w"}
    assert (r["phase"], r["writer"]) == ("Writing", "h")
    st.release_in_place(r, "w")
    st.settle_in_place(rw, spec, r)
    assert holders(r) == {"r3"}


def test_kind_rules_registered_for_all_three() -> None:
    rules = registered()
    for kind in (SEMAPHORE, MUTEX, RWMUTEX):
        assert rules[kind.kind].entry_maps == ("holders", "waiters")
    s: st.Status = {}
    request(s, "a", {"permits": 2})
    norm = rules["Semaphore"].normalize({"permits": 2}, s)
    assert norm["inUse"] == 1

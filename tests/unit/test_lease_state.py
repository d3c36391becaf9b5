"""Pure lease state: grants, releases, candidates, priority handoff, normalize."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk import WouldBlock
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._machines import lease as state
from konductor_sdk._machines.rules import registered

SPEC = {"ttlSeconds": 5}


def entry(holder: str, **extra: Any) -> dict[str, Any]:
    return {"holder": holder, "ttlSeconds": 5, "renewCount": 0, **extra}


def held_by(holder: str, key: str, token: int, priority: int = 0, **more: Any) -> dict[str, Any]:
    status = {
        "holders": {key: entry(holder, token=token, priority=priority)},
        "fencingToken": token,
        "transitions": token,
        **more,
    }
    return state.normalize(SPEC, status)


def test_lease_rules_are_registered_for_the_operator() -> None:
    rules = registered()["Lease"]
    assert rules.kind == LEASE
    assert rules.entry_maps == ("holders", "candidates")
    assert rules.normalize is state.normalize


def test_grant_on_a_new_object_takes_token_one() -> None:
    new = state.acquire(SPEC, {}, key="a#1", entry=entry("a"), priority=0, expired=frozenset())
    assert new["holders"]["a#1"]["token"] == 1
    assert (new["fencingToken"], new["transitions"], new["holder"]) == (1, 1, "a")
    assert new["preferredHolder"] == ""


def test_unexpired_holder_blocks_and_names_itself() -> None:
    status = held_by("a", "a#1", 4)
    with pytest.raises(WouldBlock, match="held by a"):
        state.acquire(SPEC, status, key="b#1", entry=entry("b"), priority=9, expired=frozenset())


def test_takeover_of_an_expired_holder_increments_token_and_drops_it() -> None:
    status = held_by("a", "a#1", 4)
    status["candidates"] = {"dead#1": entry("dead", priority=7), "b#c": entry("b")}
    new = state.acquire(
        SPEC,
        status,
        key="b#2",
        entry=entry("b"),
        priority=0,
        expired=frozenset({"a#1", "dead#1"}),
        candidate_key="b#c",
    )
    assert list(new["holders"]) == ["b#2"]
    assert new["holders"]["b#2"]["token"] == 5
    assert new["fencingToken"] == 5
    assert new["transitions"] == 5
    assert new["candidates"] == {}  # the expired one and our own candidate entry


def test_higher_priority_live_candidate_blocks_a_free_lease_but_own_entry_does_not() -> None:
    status = state.normalize(SPEC, {"candidates": {"hi#1": entry("hi", priority=5)}})
    with pytest.raises(WouldBlock, match="higher priority"):
        state.acquire(SPEC, status, key="lo#1", entry=entry("lo"), priority=1, expired=frozenset())
    new = state.acquire(
        SPEC, status, key="hi#2", entry=entry("hi"), priority=5, expired=frozenset(),
        candidate_key="hi#1",
    )  # fmt: skip
    assert new["holder"] == "hi"
    equal = state.acquire(
        SPEC, status, key="eq#1", entry=entry("eq"), priority=5, expired=frozenset()
    )
    assert equal["holder"] == "eq"  # ties do not block: the first write wins


def test_release_needs_the_same_grant() -> None:
    status = held_by("a", "a#1", 3)
    assert state.release(SPEC, status, key="a#1", token=2) is None
    assert state.release(SPEC, status, key="zz", token=3) is None
    new = state.release(SPEC, status, key="a#1", token=3)
    assert new is not None
    assert new["holders"] == {}
    assert (new["holder"], new["fencingToken"]) == ("", 3)
    assert "renewTime" not in new


def test_preferred_holder_is_the_best_candidate_outranking_the_holder() -> None:
    status = held_by("a", "a#1", 1, priority=2)
    status["candidates"] = {
        "x#1": entry("x", priority=2),
        "z#1": entry("z", priority=7),
        "y#1": entry("y", priority=7),
    }
    new = state.normalize(SPEC, status)
    assert new["preferredHolder"] == "y"  # highest priority, ties by key
    assert state.yield_to(new, key="a#1", identity="a") == "y"
    assert state.yield_to(new, key="other", identity="a") is None
    del status["candidates"]["y#1"], status["candidates"]["z#1"]
    assert state.normalize(SPEC, status)["preferredHolder"] == ""  # equal priority: no handoff


def test_register_candidate_is_idempotent_bounded_and_reaps_expired() -> None:
    status: dict[str, Any] = {}
    new = state.register_candidate(SPEC, status, key="c#1", entry=entry("c"), priority=3)
    assert new is not None
    assert new["candidates"]["c#1"]["priority"] == 3
    assert state.register_candidate(SPEC, new, key="c#1", entry=entry("c"), priority=3) is None
    full = {f"k{i}": entry(f"h{i}") for i in range(state.MAX_CANDIDATES)}
    status = state.normalize(SPEC, {"candidates": full})
    assert state.register_candidate(SPEC, status, key="n", entry=entry("n"), priority=0) is None
    made_room = state.register_candidate(
        SPEC, status, key="n", entry=entry("n"), priority=0, expired=frozenset({"k0"})
    )
    assert made_room is not None
    assert "k0" not in made_room["candidates"]
    assert "n" in made_room["candidates"]


def test_forget_removes_from_both_maps() -> None:
    status = held_by("a", "a#1", 1)
    status["candidates"] = {"a#c": entry("a")}
    new = state.forget(SPEC, status, keys=frozenset({"a#1", "a#c"}))
    assert new is not None
    assert (new["holders"], new["candidates"]) == ({}, {})
    assert state.forget(SPEC, new, keys=frozenset({"a#1"})) is None


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"holders": {"a#1": entry("a", token=2)}, "fencingToken": 1},
        {"holders": {"a#1": entry("a", token=1)}, "candidates": {"b": entry("b", priority=1)}},
        {"holder": "stale", "preferredHolder": "stale", "renewTime": "x"},
    ],
)
def test_normalize_is_idempotent_and_repairs(status: dict[str, Any]) -> None:
    once = state.normalize(SPEC, status)
    assert state.normalize(SPEC, once) == once
    assert once["fencingToken"] >= max([e["token"] for e in once["holders"].values()], default=0)
    current = state.holder_entry(once)
    assert once["holder"] == (current[1]["holder"] if current else "")


def test_gauges_and_describe() -> None:
    obj = KObject({"status": held_by("a", "a#1", 7)})
    assert state.gauges(obj) == {
        "held": 1.0,
        "candidates": 0.0,
        "fencing_token": 7.0,
        "transitions": 7.0,
    }
    assert state.describe(obj) == "held by a (token 7)"

"""Pure lease state: the judgment, the patches, normalize, and what the operator uses."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._machines import lease as state
from konductor_sdk._machines.rules import registered
from tests.unit._jsonpatch import PatchFailed, apply_patch

SPEC = {"ttlSeconds": 10}
FRESH: dict[str, Any] = {
    "holders": {},
    "fencingToken": 0,
    "transitions": 0,
    "holder": "",
    "preferredHolder": "",
}  # what the CRD's defaults make of a new object's status


def entry(holder: str, **extra: Any) -> dict[str, Any]:
    return {
        "holder": holder,
        "creator": "alice",
        "session": f"{holder}-s",
        "ttlSeconds": 10,
        "renewCount": 0,
        "acquiredAt": "2026-01-01T00:00:00.000000Z",
        "renewedAt": "2026-01-01T00:00:00.000000Z",
        "priority": 0,
        **extra,
    }


def grant(status: dict[str, Any], key: str, holder: str, **extra: Any) -> dict[str, Any]:
    ops, token = state.grant_patch(status, key=key, entry=entry(holder, **extra))
    doc = apply_patch({"status": status}, ops)
    assert doc["status"]["holders"][key]["token"] == token
    return dict(doc["status"])


def obs(**kw: Any) -> state.Observation:
    values: dict[str, Any] = {
        "now": 100.0,
        "holder_expires_at": None,
        "free_since": None,
        "may_remove_holder": True,
        "ahead": 0,
    }
    return state.Observation(**{**values, **kw})


def test_lease_rules_are_registered_for_the_operator() -> None:
    rules = registered()["Lease"]
    assert rules.kind == LEASE
    assert rules.entry_maps == ("holders",)  # candidates are Claims now
    assert rules.normalize is state.normalize


def test_a_grant_takes_the_next_token_and_mirrors_the_entry() -> None:
    new = grant(FRESH, "a#1", "a")
    assert new["holders"]["a#1"]["token"] == 1
    assert (new["fencingToken"], new["transitions"], new["holder"]) == (1, 1, "a")
    assert new["acquireTime"] == new["renewTime"] == entry("a")["acquiredAt"]
    assert state.normalize(SPEC, new) == new  # the operator sees no drift
    again = grant(new, "b#1", "b")  # taking over (after judging it expired)
    assert list(again["holders"]) == ["b#1"]
    assert (again["fencingToken"], again["transitions"]) == (2, 2)


def test_a_grant_fails_if_anyone_granted_or_the_holder_renewed_since() -> None:
    held = grant(FRESH, "a#1", "a")
    stale_free, _ = state.grant_patch(FRESH, key="b#1", entry=entry("b"))
    with pytest.raises(PatchFailed, match="fencingToken"):
        apply_patch({"status": held}, stale_free)
    takeover, _ = state.grant_patch(held, key="b#1", entry=entry("b"))
    renewed = apply_patch(
        {"status": held}, state.renew_patch(key="a#1", token=1, renew_count=1, now="t")
    )
    with pytest.raises(PatchFailed, match="renewCount"):
        apply_patch(renewed, takeover)


def test_renew_and_release_only_touch_their_own_grant() -> None:
    held = {"status": grant(FRESH, "a#1", "a")}
    renewed = apply_patch(held, state.renew_patch(key="a#1", token=1, renew_count=1, now="T1"))
    entry_ = renewed["status"]["holders"]["a#1"]
    assert (entry_["renewCount"], entry_["renewedAt"], renewed["status"]["renewTime"]) == (
        1,
        "T1",
        "T1",
    )
    assert state.normalize(SPEC, renewed["status"]) == renewed["status"]
    with pytest.raises(PatchFailed):
        apply_patch(held, state.renew_patch(key="a#1", token=2, renew_count=1, now="T1"))
    with pytest.raises(PatchFailed):
        apply_patch(held, state.release_patch(key="a#1", token=2))
    released = apply_patch(renewed, state.release_patch(key="a#1", token=1))["status"]
    assert (released["holders"], released["holder"], released["fencingToken"]) == ({}, "", 1)
    assert released["renewTime"] == "T1"  # the last holder's times stay, for humans
    assert state.normalize(SPEC, released) == released
    with pytest.raises(PatchFailed):  # twice: the entry is gone
        apply_patch({"status": released}, state.release_patch(key="a#1", token=1))


def test_prefer_and_unprefer() -> None:
    held = {"status": grant(FRESH, "a#1", "a")}
    asked = apply_patch(held, state.prefer_patch(key="a#1", token=1, identity="hi"))
    assert asked["status"]["preferredHolder"] == "hi"
    assert state.normalize(SPEC, asked["status"]) == asked["status"]
    assert state.yield_to(asked["status"], key="a#1", identity="a") == "hi"
    assert state.yield_to(asked["status"], key="other", identity="a") is None
    assert state.yield_to(asked["status"], key="a#1", identity="hi") is None
    withdrawn = apply_patch(asked, state.unprefer_patch(identity="hi"))
    assert withdrawn["status"]["preferredHolder"] == ""
    with pytest.raises(PatchFailed):  # somebody else's request is not ours to withdraw
        apply_patch(asked, state.unprefer_patch(identity="other"))
    # the grant that follows clears it
    released = apply_patch(asked, state.release_patch(key="a#1", token=1))["status"]
    assert released["preferredHolder"] == ""


@pytest.mark.parametrize(
    ("status", "observation", "priority", "action", "at"),
    [
        # free, nobody ahead: take it
        (FRESH, obs(free_since=90.0), 0, "grant", None),
        # free, two ahead: they get one more lease duration, spread by position
        (FRESH, obs(free_since=90.0, ahead=2), 0, "wait", 90.0 + 10 * 1.5),
        (FRESH, obs(free_since=70.0, ahead=2), 0, "grant", None),
        (FRESH, obs(free_since=95.0, ahead=1), 0, "wait", 105.0),
        # held, live on our clock
        ("held", obs(holder_expires_at=105.0), 0, "wait", 105.0),
        # held, live, by a lower priority: the head asks for a handoff; others wait
        ("held", obs(holder_expires_at=105.0), 5, "prefer", None),
        ("held", obs(holder_expires_at=105.0, ahead=1), 5, "wait", 105.0),
        # held, expired, our user: take it over (if we are the head)
        ("held", obs(holder_expires_at=99.0), 0, "grant", None),
        ("held", obs(holder_expires_at=99.0, ahead=1), 0, "wait", 109.0),
        # held, expired, another user's: only the operator may remove it
        ("held", obs(holder_expires_at=50.0, may_remove_holder=False), 0, "wait", None),
    ],
)
def test_judge(
    status: Any, observation: state.Observation, priority: int, action: str, at: float | None
) -> None:
    if status == "held":
        status = grant(FRESH, "h#1", "holder")
    verdict = state.judge(SPEC, status, observation, identity="me", priority=priority)
    assert (verdict.action, verdict.at) == (action, at), verdict.reason


def test_an_asked_holder_is_not_asked_again() -> None:
    held = grant(FRESH, "h#1", "holder")
    asked = dict(held, preferredHolder="me")
    verdict = state.judge(SPEC, asked, obs(holder_expires_at=105.0), identity="me", priority=5)
    assert verdict.action == "wait"


def test_head_delay_is_bounded_by_two_lease_durations() -> None:
    assert state.head_delay(0, 10) == 0
    assert state.head_delay(1, 10) == 10
    delays = [state.head_delay(n, 10) for n in range(1, 2000)]
    assert delays == sorted(delays)
    assert max(delays) < 20


def test_normalize_repairs_and_is_idempotent() -> None:
    broken = {
        "holders": {"a#1": entry("a", token=2)},
        "fencingToken": 1,
        "holder": "stale",
        "preferredHolder": "a",
        "candidates": {"old": {}},
    }
    once = state.normalize(SPEC, broken)
    assert state.normalize(SPEC, once) == once
    assert (once["fencingToken"], once["holder"], once["preferredHolder"]) == (2, "a", "")
    assert "candidates" not in once
    assert state.normalize(SPEC, {}) == FRESH


def test_forget_removes_holder_entries() -> None:
    held = grant(FRESH, "a#1", "a")
    new = state.forget(SPEC, held, keys={"a#1"})
    assert new is not None
    assert (new["holders"], new["holder"]) == ({}, "")
    assert state.forget(SPEC, new, keys={"a#1"}) is None


def test_gauges_and_describe() -> None:
    obj = KObject({"status": grant(grant(FRESH, "a#1", "a"), "b#2", "b")})
    assert state.gauges(obj) == {"held": 1.0, "fencing_token": 2.0, "transitions": 2.0}
    assert state.describe(obj) == "held by b (token 2)"
    assert state.ttl_of({}) == 15

"""The pure state of the semaphore family, example by example (no server): slots, the
fairness walk, preemption choices, the patches, the operator's normalize."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk import ConfigurationError
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, SEMAPHORE, KObject
from konductor_sdk._machines import semaphore as st
from konductor_sdk._machines import semaphore_plan as pl
from konductor_sdk._machines.rules import registered

SEM, MTX, RW = st.SEMAPHORE_KIND, st.MUTEX_KIND, st.RWMUTEX_KIND


def grant(token: int, weight: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "weight": weight,
        "token": token,
        "session": "s",
        "creator": "u",
        "holder": "h",
        **extra,
    }


def status(*held: tuple[int, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    holders = {str(slot): e for slot, e in held}
    top = max((e["token"] for _, e in held), default=0)
    return {"fencingToken": top, "holders": holders, **extra}


def req(rid: str, weight: int = 1, priority: int = 0, **kw: Any) -> pl.Request:
    fields = {"weight": weight, **({"mode": kw.pop("mode")} if "mode" in kw else {})}
    return pl.Request(id=rid, priority=priority, fields=fields, **kw)


def granted(plan: pl.Plan) -> list[tuple[str, int]]:
    return [(p.request, p.slot) for p in plan.grants]


# -- free slots ------------------------------------------------------------------------


def test_free_slots_best_fit_and_take() -> None:
    held = st.grants(status((1, grant(1)), (3, grant(2, 2)), (7, grant(3))))
    free = pl.FreeSlots(held, 10)
    # runs: [0,1) [2,3) [5,7) [8,10)
    assert free.place(1) == 0
    assert free.place(2) == 5  # the smallest run that fits, lowest on a tie
    assert free.place(3) is None
    free.take(5, 1)
    assert free.place(2) == 8
    free.take(0, 1)
    assert free.place(1) == 2


def test_free_slots_ignore_grants_beyond_a_lowered_size() -> None:
    held = st.grants(status((0, grant(1)), (6, grant(2, 3))))
    free = pl.FreeSlots(held, 4)
    assert free.place(3) == 1
    assert free.place(4) is None


# -- the plan ---------------------------------------------------------------------------


def test_the_fitting_prefix_is_granted_and_the_head_blocks_the_rest() -> None:
    spec = {"permits": 4}
    s = status((0, grant(1)))
    plan = pl.plan(SEM, spec, s, [req("a"), req("b", 2), req("c", 2), req("d")])
    assert granted(plan) == [("a", 1), ("b", 2)]
    assert plan.head == "c"  # d would fit, but waits behind the head


def test_a_request_that_can_never_fit_is_skipped() -> None:
    plan = pl.plan(SEM, {"permits": 2}, {}, [req("huge", 3), req("a")])
    assert granted(plan) == [("a", 0)]
    assert plan.head is None


def test_weights_need_adjacent_slots() -> None:
    spec = {"permits": 4}
    s = status((0, grant(1)), (2, grant(2)))  # free: slot 1, slot 3
    plan = pl.plan(SEM, spec, s, [req("pair", 2), req("one")])
    assert plan.grants == ()
    assert plan.head == "pair"  # two units free, but not adjacent: the head waits


def test_burst_only_for_the_head_that_asks_and_only_within_permits_plus_burst() -> None:
    spec = {"permits": 2, "burst": 1}
    s = status((0, grant(1)), (1, grant(2)))
    plan = pl.plan(SEM, spec, s, [req("b", allow_burst=True), req("c", allow_burst=True)])
    assert [(p.request, p.slot, p.burst) for p in plan.grants] == [("b", 2, True)]
    assert plan.head == "c"
    plan = pl.plan(SEM, spec, s, [req("x")])
    assert plan.grants == ()


def test_regular_grants_never_use_burst_room() -> None:
    spec = {"permits": 2, "burst": 2}
    s = status((0, grant(1)), (2, grant(2, burst=True, ttlSeconds=5)))
    # regular use 1 of 2: one more regular unit fits, in any free slot
    plan = pl.plan(SEM, spec, s, [req("a"), req("b")])
    assert granted(plan) == [("a", 1)]
    assert plan.head == "b"


def test_the_holder_cap_makes_the_head_wait() -> None:
    spec = {"permits": st.MAX_HOLDERS + 10}
    held = [(i, grant(i + 1)) for i in range(st.MAX_HOLDERS - 1)]
    plan = pl.plan(SEM, spec, status(*held), [req("last"), req("over")])
    assert granted(plan) == [("last", st.MAX_HOLDERS - 1)]
    assert plan.head == "over"
    assert plan.full


def test_mutex_one_holder() -> None:
    plan = pl.plan(MTX, {}, {}, [req("a"), req("b")])
    assert granted(plan) == [("a", 0)]
    assert plan.head == "b"


def test_rwmutex_writer_alone_and_blocks_later_readers() -> None:
    spec = {"maxReaders": 3}
    reader = {"mode": "read"}
    plan = pl.plan(RW, spec, {}, [req("r1", **reader), req("w", mode="write"), req("r2", **reader)])
    assert granted(plan) == [("r1", 0)]
    assert plan.head == "w"
    plan = pl.plan(RW, spec, {}, [req("w", mode="write"), req("r", **reader)])
    assert [(p.request, p.slot, p.weight) for p in plan.grants] == [("w", 0, 3)]
    assert plan.head == "r"


def test_rwmutex_writer_excludes_readers_even_after_max_readers_grew() -> None:
    # Granted when maxReaders was 2; a reader must not slip into the slots beyond.
    s = status((0, grant(1, 2, mode="write")))
    plan = pl.plan(RW, {"maxReaders": 5}, s, [req("r", mode="read")])
    assert plan.grants == ()
    assert plan.head == "r"


# -- preemption -------------------------------------------------------------------------


def test_preemption_asks_the_fewest_lowest_priority_newest_holders() -> None:
    spec = {"permits": 3}
    s = status(
        (0, grant(1, priority=0, preemptible=True)),
        (1, grant(2, priority=0, preemptible=True)),
        (2, grant(3, priority=5, preemptible=True)),
    )
    plan = pl.plan(SEM, spec, s, [req("vip", 1, priority=3)])
    assert plan.head == "vip"
    assert plan.preempt == (2,)  # newest of the lowest priority
    # Already asked: it counts as leaving, nobody more is asked.
    s["preemptRequests"] = {"2": {"creator": "u", "session": "x"}}
    assert pl.plan(SEM, spec, s, [req("vip", 1, priority=3)]).preempt == ()
    # Needing two adjacent slots: a pair that makes a run.
    s.pop("preemptRequests")
    plan = pl.plan(SEM, spec, s, [req("vip", 2, priority=3)])
    assert plan.preempt == (1, 2) or plan.preempt == (1,)
    assert set(plan.preempt) <= {1, 2}


def test_no_preemption_in_vain_or_of_equal_priority_or_for_others() -> None:
    spec = {"permits": 2}
    s = status((0, grant(1, priority=0, preemptible=True)), (1, grant(2, priority=1)))
    # Even asking every candidate would not free 2 slots: nobody is asked.
    assert pl.plan(SEM, spec, s, [req("vip", 2, priority=9)]).preempt == ()
    # Equal priority is not lower.
    assert pl.plan(SEM, spec, s, [req("peer", 1, priority=0)]).preempt == ()
    # Only computed for a head this process owns.
    plan = pl.plan(SEM, spec, s, [req("vip", 1, priority=9)], preempt_for=lambda _: False)
    assert plan.head == "vip"
    assert plan.preempt == ()


# -- patches ----------------------------------------------------------------------------


def obj(status_: dict[str, Any] | None, rv: str = "7") -> KObject:
    raw: dict[str, Any] = {"metadata": {"name": "x", "resourceVersion": rv}, "spec": {}}
    if status_ is not None:
        raw["status"] = status_
    return KObject(raw)


def test_first_grant_on_an_empty_status_is_a_compare_and_swap() -> None:
    ops, tokens = pl.grant_patch(obj(None), [(0, {"weight": 1}), (1, {"weight": 2})])
    assert tokens == [1, 2]
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert ops[1]["path"] == "/status"
    assert ops[1]["value"]["fencingToken"] == 2
    assert ops[1]["value"]["holders"]["1"] == {"weight": 2, "token": 2}


def test_grant_patch_tests_the_counter_and_withdraws_own_requests() -> None:
    s = status((0, grant(4)), preemptRequests={"4": {"creator": "u", "session": "s"}})
    ops, tokens = pl.grant_patch(obj(s), [(1, {"weight": 1})], drop_requests=[4, 99])
    assert tokens == [5]
    assert ops == [
        {"op": "test", "path": "/status/fencingToken", "value": 4},
        {"op": "add", "path": "/status/holders/1", "value": {"weight": 1, "token": 5}},
        {"op": "add", "path": "/status/fencingToken", "value": 5},
        {"op": "remove", "path": "/status/preemptRequests/4"},
    ]


def test_grant_patch_without_a_holders_map_adds_it() -> None:
    ops, _ = pl.grant_patch(obj({"inUse": 0}), [(0, {"weight": 1})])
    assert ops[0]["path"] == "/metadata/resourceVersion"
    assert ops[1] == {
        "op": "add",
        "path": "/status/holders",
        "value": {"0": {"weight": 1, "token": 1}},
    }


def test_release_and_deadline_patches_test_the_token() -> None:
    assert pl.release_patch(3, 9) == [
        {"op": "test", "path": "/status/holders/3/token", "value": 9},
        {"op": "remove", "path": "/status/holders/3"},
    ]
    ops = pl.deadline_patch(3, 9, 30)
    assert ops[0]["op"] == "test"
    assert {o["path"] for o in ops[1:]} == {
        "/status/holders/3/ttlSeconds",
        "/status/holders/3/renewCount",
    }


def test_request_and_withdraw_patches() -> None:
    r = {"creator": "u", "session": "s"}
    assert pl.request_patch({}, {4: r}) == [
        {"op": "add", "path": "/status/preemptRequests", "value": {"4": r}}
    ]
    assert pl.request_patch({"preemptRequests": {}}, {4: r})[0]["path"] == (
        "/status/preemptRequests/4"
    )
    assert pl.withdraw_patch({"preemptRequests": {"4": r}}, [4, 5]) == [
        {"op": "remove", "path": "/status/preemptRequests/4"}
    ]


# -- normalize, rules -------------------------------------------------------------------


def test_normalize_recomputes_aggregates_and_drops_moot_requests_only() -> None:
    s = status(
        (0, grant(1, 2)),
        (2, grant(2, burst=True, ttlSeconds=5)),
        preemptRequests={"1": {"creator": "u"}, "77": {"creator": "u"}},
        queueLength=4,
    )
    out = st.normalize_for(SEM)({"permits": 2, "burst": 1}, s)
    assert (out["inUse"], out["available"], out["burstInUse"], out["phase"]) == (3, 0, 1, "Full")
    assert out["holderCount"] == 2
    assert out["queueLength"] == 4  # counts claims: kept as the operator set it
    assert set(out["preemptRequests"]) == {"1"}
    assert out["holders"] == s["holders"]
    assert st.normalize_for(SEM)({"permits": 2, "burst": 1}, out) == out


def test_normalize_of_the_locks() -> None:
    m = st.normalize_for(MTX)({}, status((0, grant(3, holder="me"))))
    assert (m["phase"], m["currentHolder"]) == ("Locked", "me")
    assert "currentHolder" not in st.normalize_for(MTX)({}, {})
    r = st.normalize_for(RW)(
        {"maxReaders": 4}, status((0, grant(1, mode="read")), (1, grant(2, mode="read")))
    )
    assert (r["phase"], r["readers"]) == ("Reading", 2)
    w = st.normalize_for(RW)({"maxReaders": 2}, status((0, grant(5, 2, mode="write", holder="w"))))
    assert (w["phase"], w["writer"], w["readers"]) == ("Writing", "w", 0)


def test_normalize_is_total_on_garbage() -> None:
    junk: dict[str, Any] = {"holders": {"x": 1, "-3": {"weight": 1, "token": 1}, "0": "no"}}
    out = st.normalize_for(SEM)({"permits": "many"}, junk)
    assert out["inUse"] == 0
    assert out["holderCount"] == 0


def test_check_fits_names_the_limit() -> None:
    with pytest.raises(ConfigurationError, match=r"weight must be <= 3 \(limit 2 \+ burst 1\)"):
        st.check_fits(SEM, {"permits": 2, "burst": 1}, {"weight": 4, "allowBurst": True}, "x")
    st.check_fits(RW, {"maxReaders": 2}, {"mode": "write"}, "x")


def test_rules_are_registered_for_the_three_kinds() -> None:
    rules = registered()
    for kind in (SEMAPHORE, MUTEX, RWMUTEX):
        r = rules[kind.kind]
        assert r.entry_maps == ("holders", "preemptRequests")
        o = KObject(
            {"metadata": {"name": "x"}, "spec": {"permits": 2}, "status": status((0, grant(1)))}
        )
        assert r.gauges is not None
        assert r.gauges(o)["holders"] == 1
        assert r.describe is not None
        assert "1 holders" in r.describe(o)

"""Pure reaping rules, the timer heap and the work queue."""

from __future__ import annotations

import copy
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from konductor_operator._queue import TimerHeap, WorkQueue
from konductor_operator._reaping import (
    EXPIRED,
    POD_DELETED,
    POD_FAILED,
    POD_REPLACED,
    POD_SUCCEEDED,
    apply_removals,
    drifted,
    entry_marker,
    entry_ttl,
    expired_removal,
    iter_entries,
    pod_removal,
    pod_verdict,
)
from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines.rules import registered
from konductor_sdk._machines.semaphore import FLAVORS

SEM_RULES = registered()["Semaphore"]
SPEC = {"permits": 2}


def holder(name: str, token: int, renew: int = 0, ttl: Any = 10, **extra: Any) -> dict[str, Any]:
    return {
        "holder": name,
        "token": token,
        "ttlSeconds": ttl,
        "renewCount": renew,
        "acquiredAt": "2026-01-01T00:00:00.000000Z",
        "renewedAt": "2026-01-01T00:00:00.000000Z",
        **extra,
    }


def status(**holders: dict[str, Any]) -> dict[str, Any]:
    return SEM_RULES.normalize(SPEC, {"holders": holders, "waiters": {}, "fencingToken": 9})


def test_marker_changes_on_renewal_but_identity_does_not() -> None:
    a = holder("p", 3, renew=1)
    b = {**a, "renewCount": 2, "renewedAt": "2030-01-01T00:00:00Z"}
    assert entry_marker(a) != entry_marker(b)
    assert pod_removal(("holders", "k"), a, POD_DELETED).matches(b)
    assert not expired_removal(("holders", "k"), a, 0.0).matches(b)


def test_marker_ignores_wall_clock_fields() -> None:
    a = holder("p", 3)
    skewed = {**a, "renewedAt": "1999-01-01T00:00:00Z"}
    assert entry_marker(a) == entry_marker(skewed)


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(10, 10.0), (0.5, 0.5), (0, None), (-3, None), (None, None), ("10", None), (True, None)],
)
def test_entry_ttl(ttl: Any, expected: float | None) -> None:
    assert entry_ttl({"ttlSeconds": ttl, "renewCount": 0}) == expected


def test_an_entry_that_is_not_renewed_on_its_own_never_expires_by_time() -> None:
    # It names a session and lives as long as the session (docs/design.md, "Sessions").
    assert entry_ttl({"ttlSeconds": 10, "session": "s-1"}) is None


def test_iter_entries_skips_malformed_maps_and_entries() -> None:
    st_ = {"holders": {"a": holder("a", 1), "b": "junk"}, "waiters": ["not", "a", "map"]}
    assert [i for i, _ in iter_entries(SEM_RULES, st_)] == [("holders", "a")]


def sem(st_: dict[str, Any]) -> KObject:
    """A Semaphore with ``SPEC`` and the status ``st_`` (shared, as in a watch cache)."""
    return KObject({"metadata": {"name": "s", "namespace": "ns"}, "spec": SPEC, "status": st_})


def test_apply_removals_removes_only_unchanged_entries_and_normalizes() -> None:
    # v2 grants are keyed by their first slot (docs/semaphore.md).
    before = status(**{"0": holder("a", 1), "1": holder("b", 2)})
    frozen = copy.deepcopy(before)
    judged_a = expired_removal(("holders", "0"), before["holders"]["0"], 5.0)
    judged_b = expired_removal(("holders", "1"), before["holders"]["1"], 5.0)
    # b renewed after it was judged: its removal must not apply.
    fresh = copy.deepcopy(before)
    fresh["holders"]["1"]["renewCount"] = 1
    after, applied = apply_removals(SEM_RULES, sem(fresh), [judged_a, judged_b])
    assert applied == (judged_a,)
    assert set(after["holders"]) == {"1"}
    assert after["inUse"] == 1
    assert after["available"] == 1
    assert before == frozen, "the input (a shared cache object) was modified"


def test_apply_removals_never_writes_a_grant() -> None:
    # Grants are written by their waiters alone (v2): the operator frees units, it never
    # hands them out, so a removal leaves the other grants exactly as they were.
    st_ = status(**{"0": holder("a", 1), "1": holder("b", 2)})
    after, _ = apply_removals(
        SEM_RULES, sem(st_), [expired_removal(("holders", "0"), st_["holders"]["0"], 1.0)]
    )
    assert after["holders"] == {"1": st_["holders"]["1"]}
    assert after["fencingToken"] == st_["fencingToken"]


def test_apply_removals_of_a_replaced_entry_is_a_noop() -> None:
    st_ = status(a=holder("a", 1))
    judged = pod_removal(("holders", "a"), st_["holders"]["a"], POD_DELETED)
    st_["holders"]["a"] = holder("a", 7)  # same key, a different grant
    after, applied = apply_removals(SEM_RULES, sem(st_), [judged])
    assert applied == ()
    assert after == SEM_RULES.normalize(SPEC, st_)


def pod(uid: str, phase: str | None = None) -> KObject:
    return KObject(
        {"metadata": {"name": "p", "namespace": "ns", "uid": uid}, "status": {"phase": phase}}
    )


@pytest.mark.parametrize(
    ("ref_uid", "current", "verdict"),
    [
        ("u1", None, POD_DELETED),
        ("u1", pod("u2", "Running"), POD_REPLACED),
        ("u1", pod("u1", "Running"), None),
        ("u1", pod("u1", "Pending"), None),
        ("u1", pod("u1", None), None),
        ("u1", pod("u1", "Succeeded"), POD_SUCCEEDED),
        ("u1", pod("u1", "Failed"), POD_FAILED),
        ("", pod("u9", "Running"), None),  # no UID recorded: only name-based verdicts
        ("", pod("u9", "Failed"), POD_FAILED),
        ("", None, POD_DELETED),
    ],
)
def test_pod_verdict(ref_uid: str, current: KObject | None, verdict: str | None) -> None:
    assert pod_verdict(PodRef("p", "ns", ref_uid), current) == verdict


def test_drifted() -> None:
    good = KObject({"metadata": {"name": "s"}, "spec": SPEC, "status": status()})
    assert not drifted(SEM_RULES, good)
    bad = KObject({"metadata": {"name": "s"}, "spec": SPEC, "status": {**status(), "inUse": 5}})
    assert drifted(SEM_RULES, bad)


def test_reasons_are_distinct() -> None:
    assert len({EXPIRED, POD_DELETED, POD_REPLACED, POD_SUCCEEDED, POD_FAILED}) == 5
    assert set(FLAVORS) >= {"Semaphore"}


# -- TimerHeap ---------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdef"),
            st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
        ),
        max_size=60,
    ),
    st.floats(0, 100, allow_nan=False),
)
def test_timer_heap_matches_a_dict_model(ops: list[tuple[str, float | None]], now: float) -> None:
    heap: TimerHeap[str] = TimerHeap()
    model: dict[str, float] = {}
    for key, when in ops:
        heap.schedule(key, when)
        if when is None:
            model.pop(key, None)
        else:
            model[key] = when
        assert heap.next_deadline() == (min(model.values()) if model else None)
        assert len(heap) == len(model)
    due = heap.pop_due(now)
    assert sorted(due) == sorted(k for k, w in model.items() if w <= now)
    assert heap.pop_due(now) == []
    assert all(heap.deadline(k) == w for k, w in model.items() if w > now)


def test_timer_heap_reports_a_new_earliest_deadline() -> None:
    heap: TimerHeap[str] = TimerHeap()
    assert heap.schedule("a", 10.0)
    assert not heap.schedule("b", 20.0)
    assert heap.schedule("b", 5.0)
    assert not heap.schedule("b", 5.0)


def test_timer_heap_memory_stays_proportional_to_keys() -> None:
    heap: TimerHeap[str] = TimerHeap()
    for i in range(10_000):
        heap.schedule("only", float(i))
    assert len(heap._heap) <= 4 * 64 + 1


# -- WorkQueue -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_work_queue_dedupes_and_never_hands_out_a_key_twice() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in "abab":
        q.add(key)
    assert len(q) == 2
    first = await q.get()
    q.add(first)  # re-marked while processing: queued again only after done()
    second = await q.get()
    assert {first, second} == {"a", "b"}
    assert q.idle() is False
    assert len(q) == 0
    q.done(first)
    assert await q.get() == first
    q.done(first)
    q.done(second)
    assert q.idle()
    await q.join()


@pytest.mark.anyio
async def test_work_queue_hands_out_background_keys_only_when_nothing_else_waits() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("r1", "r2", "r3"):
        q.add(key, background=True)
    q.add("due")
    q.add("r3")  # marked dirty by an event too: no longer waits behind the resync
    q.add("due", background=True)  # already in the front lane: stays there
    assert len(q) == 4
    assert [await q.get() for _ in range(2)] == ["due", "r3"]
    assert await q.get() == "r1"
    q.add("late")
    assert await q.get() == "late"
    assert await q.get() == "r2"
    assert len(q) == 0
    for key in ("due", "r3", "r1", "late", "r2"):
        q.done(key)
    assert q.idle()


@pytest.mark.anyio
async def test_work_queue_a_key_re_marked_while_processed_keeps_the_more_urgent_lane() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a", background=True)
    q.add("a")  # an event during the pass: urgent
    q.add("b", background=True)
    q.done("a")
    assert await q.get() == "a"
    q.add("a", background=True)  # only the resync while processed: background again
    q.add("c", background=True)
    q.done("a")
    assert [await q.get() for _ in range(3)] == ["b", "c", "a"]
    for key in "bca":
        q.done(key)
    assert q.idle()
    await q.join()


@pytest.mark.anyio
async def test_work_queue_get_waits_for_add() -> None:
    q: WorkQueue[str] = WorkQueue()
    got: list[str] = []

    async def consumer() -> None:
        got.append(await q.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        tg.start_soon(consumer)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        q.add("x")
        q.add("y")
    assert sorted(got) == ["x", "y"]

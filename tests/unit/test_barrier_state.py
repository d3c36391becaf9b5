"""The pure barrier state: counters, batches, ranks, quorum and last call, failure,
generations, outcomes, and the operator's hooks."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.objects import BARRIER, CLAIM, KObject
from konductor_sdk._machines import barrier as bs
from konductor_sdk._machines import barrier_outcome as bo
from konductor_sdk._machines.rules import registered

NOW = "2026-01-01T00:00:00.000000Z"
_batches = itertools.count()


def arrive(
    spec: dict[str, Any],
    status: dict[str, Any],
    count: int = 1,
    *,
    user: str = "alice",
    session: str = "s-alice",
    batch: str | None = None,
) -> bs.Arrival:
    return bs.arrive(
        spec,
        status,
        batch=batch or f"b{next(_batches)}",
        count=count,
        session=session,
        user=user,
        now=NOW,
    )


def arrived(spec: dict[str, Any], status: dict[str, Any], count: int = 1, **kw: Any) -> Any:
    result = arrive(spec, status, count, **kw)
    assert result.status is not None
    assert result.count == count
    return result.status


def rank(status: dict[str, Any], generation: int, index: int) -> int | None:
    out = bo.outcome(status, generation=generation, index=index)
    assert out.state == bo.OPENED, out
    return out.rank


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"expected": 0}, "expected"),
        ({"expected": -1}, "expected"),
        ({"expected": bs.MAX_EXPECTED + 1}, "expected"),
        ({"expected": 2.5}, "expected"),
        ({"expected": 2.0}, "expected"),
        ({"expected": True}, "expected"),
        ({"expected": "8"}, "expected"),
        ({"expected": 4, "quorum": 5}, "quorum"),
        ({"expected": 4, "quorum": 0}, "quorum"),
        ({"expected": 4, "quorum": 2.0}, "quorum"),
        ({"expected": 4, "quorum": 2, "last_call": -1}, "last_call"),
        ({"expected": 4, "quorum": 2, "last_call": float("nan")}, "last_call"),
        ({"expected": 4, "last_call": 5}, "last_call"),
        ({"expected": 4, "timeout": 0}, "timeout"),
        ({"expected": 4, "timeout": -3}, "timeout"),
        ({"expected": 4, "timeout": float("inf")}, "timeout"),
        ({"expected": 4, "timeout": "10"}, "timeout"),
    ],
)
def test_bad_specs_are_rejected_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        bs.validate_spec(**kwargs)


def test_no_cap_of_a_thousand_parties_any_more_only_the_int32_range() -> None:
    assert bs.MAX_EXPECTED == 2**31 - 1
    assert bs.validate_spec(expected=10_000).expected == 10_000
    assert bs.validate_spec(expected=bs.MAX_EXPECTED, quorum=4096).quorum == 4096
    with pytest.raises(ConfigurationError, match=r"expected must be a whole number in \[1, 2147"):
        bs.validate_spec(expected=2**31)


def test_a_good_spec_round_trips() -> None:
    spec = bs.validate_spec(expected=8, quorum=6, last_call=2.5, timeout=60)
    assert spec.to_mapping() == {
        "expected": 8,
        "quorum": 6,
        "lastCallSeconds": 2.5,
        "timeoutSeconds": 60,
    }
    assert bs.parse_spec(spec.to_mapping()) == spec


def test_parse_spec_is_total_on_garbage() -> None:
    sp = bs.parse_spec({"expected": "x", "quorum": 99, "timeoutSeconds": -1})
    assert sp.expected == 1
    assert sp.effective_quorum == 1
    assert sp.timeout is None


def test_a_batch_counts_per_user_and_takes_consecutive_indices() -> None:
    spec = {"expected": 10}
    first = arrive(spec, {}, 3, user="alice", session="s1")
    assert (first.generation, first.first_index, first.count) == (1, 0, 3)
    s = first.status
    assert s is not None
    second = arrive(spec, s, 2, user="bob", session="s2")
    assert (second.first_index, second.count) == (3, 2)
    s = second.status
    assert s is not None
    assert (s["arrived"], s["nextIndex"], s["arrivedBy"]) == (5, 5, {"alice": 3, "bob": 2})
    assert s["startedAt"] == NOW
    assert [(r["user"], r["firstIndex"], r["count"]) for r in s["recent"]] == [
        ("alice", 0, 3),
        ("bob", 3, 2),
    ]


def test_the_write_that_completes_the_count_opens_in_the_same_write() -> None:
    spec = {"expected": 4}
    s = arrived(spec, {}, 3)
    assert s["phase"] == bs.WAITING
    s = arrived(spec, s, 1, user="bob")
    assert (s["phase"], s["openedAt"], s["arrived"]) == (bs.OPEN, NOW, 4)
    assert [h["phase"] for h in s["history"]] == [bs.OPEN]
    assert [rank(s, 1, i) for i in range(4)] == [0, 1, 2, 3]


def test_a_batch_larger_than_the_room_left_is_split_over_generations() -> None:
    spec = {"expected": 4}
    s = arrived(spec, {}, 3)
    more = arrive(spec, s, 5, user="bob")
    assert (more.generation, more.first_index, more.count) == (1, 3, 1)  # one fits
    assert more.status is not None
    assert more.status["phase"] == bs.OPEN
    rest = arrive(spec, more.status, 4, user="bob")  # the other 4: the next generation
    assert (rest.generation, rest.first_index, rest.count) == (2, 0, 4)
    assert rest.status is not None
    assert rest.status["phase"] == bs.OPEN
    assert rest.status["previous"]["generation"] == 1


def test_an_arrival_into_a_barrier_due_to_open_only_opens_it() -> None:
    spec = {"expected": 5}
    s = arrived(spec, {}, 3)
    lowered = {"expected": 3}
    result = arrive(lowered, s, 2)
    assert (result.count, result.generation) == (0, 1)  # no arrival in this write
    assert result.status is not None
    assert result.status["phase"] == bs.OPEN
    assert result.status["arrived"] == 3


def test_an_arrival_batch_is_recorded_once_whatever_the_retries() -> None:
    spec = {"expected": 10}
    first = arrive(spec, {}, 2, batch="once")
    assert first.status is not None
    s = arrived(spec, first.status, 1, user="bob")
    again = arrive(spec, s, 2, batch="once")
    assert again.status is None
    assert (again.recorded, again.generation, again.first_index, again.count) == (True, 1, 0, 2)


def test_a_lost_answer_is_told_applied_not_applied_or_unknowable() -> None:
    spec = {"expected": 100}
    s = arrived(spec, {}, 1)
    lost = arrive(spec, s, 2, batch="lost")  # computed at index 1 of generation 1
    assert lost.status is not None
    # Applied: found in recent.
    assert bs.arrival_applied(lost.status, batch="lost", generation=1, first_index=1)
    # Not applied, nobody arrived since: nothing took index 1.
    assert bs.arrival_applied(s, batch="lost", generation=1, first_index=1) is False
    # Not applied, someone else's batch took index 1.
    other = arrived(spec, s, 1, user="bob", batch="other")
    assert bs.arrival_applied(other, batch="lost", generation=1, first_index=1) is False
    # Applied, but more than RECENT_LIMIT batches since: cannot be told.
    t = lost.status
    for _ in range(bs.RECENT_LIMIT):
        t = arrived(spec, t, 1, user="bob")
    assert bs.find_batch(t, "lost") is None
    assert bs.arrival_applied(t, batch="lost", generation=1, first_index=1) is None
    assert len(t["recent"]) == bs.RECENT_LIMIT


def test_departures_are_index_ranges_and_ranks_skip_them() -> None:
    spec = {"expected": 6}
    s = arrived(spec, {}, 3, user="alice")  # 0 1 2
    s = arrived(spec, s, 2, user="bob")  # 3 4
    left = bs.depart(spec, s, generation=1, spans=[(1, 1)], user="alice", now=NOW)
    assert left is not None
    assert (left["arrived"], left["departed"], left["arrivedBy"]) == (
        4,
        [[1, 1]],
        {"alice": 2, "bob": 2},
    )
    # Idempotent: an index already departed is not departed twice.
    assert bs.depart(spec, left, generation=1, spans=[(1, 1)], user="alice", now=NOW) is None
    # Nobody departs more than they have.
    assert bs.depart(spec, left, generation=1, spans=[(0, 5)], user="bob", now=NOW) is None
    s = arrived(spec, left, 2, user="carol")  # 5 6
    assert s["phase"] == bs.OPEN
    assert [bo.outcome(s, generation=1, index=i).rank for i in range(7)] == [
        0,
        None,
        1,
        2,
        3,
        4,
        5,
    ]
    assert bo.outcome(s, generation=1, index=1).state == bo.REMOVED
    # Concluded: nothing departs any more.
    assert bs.depart(spec, s, generation=1, spans=[(0, 1)], user="alice", now=NOW) is None


def test_a_user_departing_all_its_arrivals_disappears_from_arrived_by() -> None:
    spec = {"expected": 6}
    s = arrived(spec, {}, 2, user="alice")
    s = bs.depart(spec, s, generation=1, spans=[(0, 2)], user="alice", now=NOW)
    assert s is not None
    assert (s["arrived"], s["arrivedBy"], s["nextIndex"]) == (0, {}, 2)


def test_too_many_departed_ranges_fail_the_generation() -> None:
    spec = {"expected": 2 * bs.DEPARTED_LIMIT + 10}
    s = arrived(spec, {}, 2 * bs.DEPARTED_LIMIT + 4)
    for i in range(bs.DEPARTED_LIMIT):
        new = bs.depart(spec, s, generation=1, spans=[(2 * i, 1)], user="alice", now=NOW)
        assert new is not None
        s = new
    assert len(s["departed"]) == bs.DEPARTED_LIMIT
    failed = bs.depart(
        spec, s, generation=1, spans=[(2 * bs.DEPARTED_LIMIT, 1)], user="alice", now=NOW
    )
    assert failed is not None
    assert (failed["phase"], failed["reason"]) == (bs.FAILED, bs.TOO_MANY_DEPARTURES)
    assert "status.departed is bounded" in failed["message"]
    # Adjacent ranges merge, so a contiguous departure never counts against the bound.
    merged = bs.depart(spec, s, generation=1, spans=[(1, 1)], user="alice", now=NOW)
    assert merged is not None
    assert len(merged["departed"]) == bs.DEPARTED_LIMIT - 1


def test_quorum_without_last_call_opens_at_quorum() -> None:
    spec = {"expected": 4, "quorum": 2}
    s = arrived(spec, {}, 2)
    assert (s["phase"], s["arrived"]) == (bs.OPEN, 2)


def test_quorum_with_last_call_starts_a_window_that_a_waiter_closes() -> None:
    spec = {"expected": 4, "quorum": 2, "lastCallSeconds": 5}
    s = arrived(spec, {}, 1)
    assert bs.last_call_episode(spec, s) is None
    s = arrived(spec, s, 1)
    assert s["phase"] == bs.WAITING
    assert s["quorumReachedAt"] == NOW
    episode = bs.last_call_episode(spec, s)
    assert episode == (1, 1)
    s = arrived(spec, s, 1)  # a late party still gets in during the window
    assert bs.last_call_episode(spec, s) == episode
    opened = bs.open_last_call(spec, s, generation=1, episode=1, now=NOW)
    assert opened is not None
    assert (opened["phase"], opened["arrived"]) == (bs.OPEN, 3)


def test_a_dip_below_quorum_ends_the_window_and_a_new_one_is_a_new_episode() -> None:
    spec = {"expected": 4, "quorum": 2, "lastCallSeconds": 5}
    s = arrived(spec, {}, 2)
    left = bs.depart(spec, s, generation=1, spans=[(1, 1)], user="alice", now=NOW)
    assert left is not None
    assert "quorumReachedAt" not in left
    assert bs.last_call_episode(spec, left) is None
    assert bs.open_last_call(spec, left, generation=1, episode=1, now=NOW) is None
    again = arrived(spec, left, 1)
    assert bs.last_call_episode(spec, again) == (1, 2)
    assert bs.open_last_call(spec, again, generation=1, episode=1, now=NOW) is None


def test_lowering_expected_or_quorum_is_applied_by_advance() -> None:
    s = arrived({"expected": 5}, {}, 2)
    assert bs.advance({"expected": 5}, s, now=NOW) is None
    opened = bs.advance({"expected": 2}, s, now=NOW)
    assert opened is not None
    assert opened["phase"] == bs.OPEN
    spec = {"expected": 5, "quorum": 4, "lastCallSeconds": 1}
    marked = bs.advance({**spec, "quorum": 2}, arrived(spec, {}, 2), now=NOW)
    assert marked is not None
    assert marked["phase"] == bs.WAITING
    assert bs.last_call_episode({**spec, "quorum": 2}, marked) == (1, 1)


def test_missing_names_are_bounded_and_the_rest_counted() -> None:
    spec = {"expected": 100}
    s = arrived(spec, {}, 2)
    failed = bs.fail(
        spec, s, generation=1, reason=bs.TIMEOUT, message="m", missing=["r7", "r9"], now=NOW
    )
    assert failed is not None
    assert failed["missing"] == ["r7", "r9", "<96 more>"]
    names = [f"rank-{i}" for i in range(200)]
    failed = bs.fail(spec, s, generation=1, reason=bs.TIMEOUT, message="", missing=names, now=NOW)
    assert failed is not None
    assert failed["missing"] == [*names[: bs.MISSING_LIMIT], f"<{200 - bs.MISSING_LIMIT} more>"]
    assert bs.normalize(spec, failed) == failed


def test_fail_and_reset_only_touch_the_waiting_generation() -> None:
    spec = {"expected": 2}
    s = arrived(spec, {}, 2)
    assert bs.fail(spec, s, generation=1, reason=bs.TIMEOUT, message="", now=NOW) is None
    assert bs.reset(spec, s, now=NOW, message="") is None
    assert bs.reset(spec, {}, now=NOW, message="") is None  # nobody waiting: nothing to fail
    one = arrived(spec, {}, 1)
    reset = bs.reset(spec, one, now=NOW, message="by test")
    assert reset is not None
    assert reset["reason"] == bs.RESET
    assert bs.fail(spec, reset, generation=1, reason=bs.TIMEOUT, message="", now=NOW) is None


def test_outcomes_for_a_waiter_that_missed_the_concluded_state() -> None:
    spec = {"expected": 2}
    s = arrived(spec, {}, 2)
    assert bo.outcome(s, generation=1, index=0) == bo.Outcome(
        bo.OPENED, 1, rank=0, arrived=2, phase=bs.OPEN
    )
    s = arrived(spec, s, 1)  # generation 2 starts; the party of index 0 never looked
    assert bo.outcome(s, generation=1, index=0).rank == 0
    assert bo.outcome(s, generation=2, index=0).state == bo.PENDING
    assert bo.outcome(s, generation=2, index=5).state == bo.PENDING  # a view older than it
    reset = bs.reset(spec, s, now=NOW, message="r")
    assert reset is not None
    s = arrived(spec, reset, 1)  # generation 3
    out = bo.outcome(s, generation=2, index=0)
    assert (out.state, out.reason) == (bo.FAILED, bs.RESET)
    s = arrived(spec, s, 1)  # generation 3 opens
    s = arrived(spec, s, 1)  # generation 4: generation 2 only in history now
    out = bo.outcome(s, generation=2, index=0)
    assert (out.state, out.reason) == (bo.FAILED, bs.RESET)
    # Generation 1 opened with nobody leaving: its rank is still known from history.
    assert bo.outcome(s, generation=1, index=1).rank == 1
    assert bo.outcome(s, generation=9, index=0).state == bo.PENDING


def test_a_rank_of_a_generation_some_left_is_unknown_once_only_history_has_it() -> None:
    spec = {"expected": 2}
    s = arrived(spec, {}, 1)
    s = bs.depart(spec, s, generation=1, spans=[(0, 1)], user="alice", now=NOW)
    assert s is not None
    s = arrived(spec, s, 2)  # opens generation 1 with indices 1 and 2
    s = arrived(spec, s, 1)  # generation 2: generation 1 is `previous`, with departed
    assert bo.outcome(s, generation=1, index=2).rank == 1
    assert bo.outcome(s, generation=1, index=0).state == bo.REMOVED
    s = arrived(spec, s, 1)  # generation 2 opens
    s = arrived(spec, s, 1)  # generation 3: generation 1 only in history
    assert bo.outcome(s, generation=1, index=2).state == bo.UNKNOWN


def test_normalize_is_idempotent_and_total() -> None:
    for status in [
        {},
        {"phase": "bogus", "arrivedBy": [1, 2], "generation": -4, "nextIndex": "x"},
        {"departed": [[1, "a"], 7, [0, 3]], "history": "h", "recent": [1, {"batch": 2}]},
        {"arrivedBy": {"a": 0, "b": -1, "c": True, "d": 2}, "nextIndex": 2},
        arrived({"expected": 3}, {}, 3),
    ]:
        once = bs.normalize({"expected": 3}, status)
        assert bs.normalize({"expected": 3}, once) == once
        assert once["arrived"] == once["nextIndex"] - sum(c for _, c in once["departed"])


def test_history_and_recent_are_bounded() -> None:
    spec = {"expected": 1}
    s: dict[str, Any] = {}
    for _ in range(1, 40):
        s = arrived(spec, s, 1)
    assert len(s["history"]) == bs.HISTORY_LIMIT
    assert s["history"][-1]["generation"] == 39
    assert len(s["recent"]) == bs.RECENT_LIMIT


def kobj(spec: dict[str, Any], status: dict[str, Any]) -> KObject:
    return KObject(
        {"metadata": {"name": "b", "namespace": "ns", "uid": "u1"}, "spec": spec, "status": status}
    )


def claim(session: str, generation: int, first: int, parties: list[str], creator: str) -> KObject:
    return KObject(
        {
            "metadata": {
                "name": f"c-{first}",
                "namespace": "ns",
                "annotations": {"sync.konductor.io/creator": creator},
            },
            "spec": {
                "target": {"kind": "Barrier", "name": "b"},
                "session": session,
                "generation": generation,
                "firstIndex": first,
                "parties": parties,
            },
        }
    )


def test_operator_rules_are_registered_for_barrier() -> None:
    rules = registered()["Barrier"]
    assert rules.kind == BARRIER
    assert rules.entry_maps == ()
    assert rules.normalize is bs.normalize
    assert rules.drop_sessions is bs.drop_sessions
    assert CLAIM.kind == "Claim"


def test_the_timeout_runs_from_the_first_arrival_even_if_everyone_left() -> None:
    """13.5: a generation's timeout counts from its first arrival; a party that left (or
    died and was withdrawn) does not stop it, and a later arrival does not restart it."""
    rules = bs.RULES
    assert rules.timer is not None
    spec = {"expected": 3, "timeoutSeconds": 20}
    assert rules.timer(kobj(spec, {})) is None  # nobody arrived: nothing runs
    s = arrived(spec, {}, 1)
    grace = bs.operator_grace(20)
    assert rules.timer(kobj(spec, s)) == (("u1", 1), 20 + grace)
    gone = bs.depart(spec, s, generation=1, spans=[(0, 1)], user="alice", now=NOW)
    assert gone is not None
    assert gone["arrived"] == 0
    assert rules.timer(kobj(spec, gone)) == (("u1", 1), 20 + grace)  # same episode
    assert bs.timeout_seconds(spec, gone) == 20
    back = arrived(spec, gone, 1)
    assert rules.timer(kobj(spec, back)) == (("u1", 1), 20 + grace)  # not restarted
    assert rules.timer(kobj({"expected": 3}, back)) is None
    opened = arrived(spec, back, 2)
    assert rules.timer(kobj(spec, opened)) is None
    nxt = arrived(spec, opened, 1)
    assert rules.timer(kobj(spec, nxt)) == (("u1", 2), 20 + grace)  # a new generation


def test_the_operator_fails_a_timed_out_generation_counting_the_missing() -> None:
    spec = {"expected": 3, "timeoutSeconds": 7}
    s = arrived(spec, {}, 1)
    assert bs.RULES.on_timeout is not None
    failed = bs.RULES.on_timeout(kobj(spec, s))
    assert failed is not None
    assert (failed["phase"], failed["reason"], failed["missing"]) == (
        bs.FAILED,
        bs.TIMEOUT,
        ["<2 more>"],
    )
    assert "timeoutSeconds=7" in failed["message"]
    assert bs.RULES.on_timeout(kobj(spec, failed)) is None  # nothing left to time out
    assert bs.normalize(spec, failed) == failed  # the operator would not see drift


def test_dead_sessions_are_withdrawn_by_claim_and_by_recent_batch() -> None:
    spec = {"expected": 10}
    s = arrived(spec, {}, 3, user="alice", session="s-a")  # 0 1 2, claimed
    s = arrived(spec, s, 2, user="bob", session="s-b")  # 3 4, claimed
    s = arrived(spec, s, 1, user="bob", session="s-ghost")  # 5: died before its claim
    s = bs.depart(spec, s, generation=1, spans=[(1, 1)], user="alice", now=NOW)
    assert s is not None
    claims = [
        claim("s-a", 1, 0, ["a0", "a1", "a2"], "alice"),
        claim("s-b", 1, 3, ["b0", "b1"], "bob"),
    ]
    assert bs.drop_sessions(kobj(spec, s), frozenset({"s-zzz"}), claims) is None
    dropped = bs.drop_sessions(kobj(spec, s), frozenset({"s-a", "s-ghost"}), claims[:1])
    assert dropped is not None
    # a1 had left already: only a0 and a2 (and the ghost) are withdrawn now.
    assert (dropped["arrived"], dropped["departed"], dropped["arrivedBy"]) == (
        2,
        [[0, 3], [5, 1]],
        {"bob": 2},
    )
    assert bs.drop_sessions(kobj(spec, dropped), frozenset({"s-a", "s-ghost"}), claims[:1]) is None
    opened = arrived(spec, {}, 10)
    assert bs.drop_sessions(kobj(spec, opened), frozenset({"s-alice"}), []) is None


def test_gauges_and_describe() -> None:
    spec = {"expected": 3}
    obj = kobj(spec, arrived(spec, {}, 1))
    assert bs.RULES.gauges is not None
    assert bs.RULES.describe is not None
    assert bs.RULES.gauges(obj) == {"arrived": 1.0, "expected": 3.0, "generation": 1.0, "open": 0.0}
    assert bs.RULES.describe(obj) == "generation 1 Waiting: 1/3 arrived"

"""The pure barrier state: opening, quorum and last call, failure, generations, outcomes."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._machines import barrier as bs
from konductor_sdk._machines.rules import registered

NOW = "2026-01-01T00:00:00.000000Z"


def entry(holder: str) -> dict[str, Any]:
    return {"holder": holder, "ttlSeconds": 30, "renewCount": 0, "acquiredAt": f"t-{holder}"}


def arrive(spec: dict[str, Any], status: dict[str, Any], key: str, after: int = 0) -> Any:
    return bs.arrive(spec, status, key=key, entry=entry(key), after_generation=after, now=NOW)


def arrive_all(spec: dict[str, Any], keys: list[str], status: dict[str, Any] | None = None) -> Any:
    s: dict[str, Any] = status if status is not None else {}
    for key in keys:
        result = arrive(spec, s, key)
        assert result.status is not None
        s = result.status
    return s


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"expected": 0}, "expected"),
        ({"expected": -1}, "expected"),
        ({"expected": bs.MAX_EXPECTED + 1}, "expected"),
        ({"expected": 2.5}, "expected"),
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


def test_the_arrival_that_completes_the_count_opens_in_the_same_write() -> None:
    spec = {"expected": 3}
    s = arrive_all(spec, ["a", "b"])
    assert s["phase"] == bs.WAITING
    assert s["arrived"] == 2
    s = arrive_all(spec, ["c"], s)
    assert s["phase"] == bs.OPEN
    assert s["openedAt"] == NOW
    assert s["parties"] == ["a", "b", "c"]
    assert [s["arrivals"][k]["index"] for k in "abc"] == [0, 1, 2]
    assert [h["phase"] for h in s["history"]] == [bs.OPEN]


def test_arrive_is_idempotent_per_party_until_it_finished_the_generation() -> None:
    spec = {"expected": 3}
    s = arrive_all(spec, ["a"])
    again = arrive(spec, s, "a")
    assert again.status is None
    assert again.generation == 1
    # Once the party finished generation 1 (after_generation=1), it joins the next one.
    s = arrive_all(spec, ["b", "c"], s)
    nxt = arrive(spec, s, "a", after=1)
    assert nxt.status is not None
    assert nxt.generation == 2
    assert nxt.status["arrivals"] == {"a": nxt.status["arrivals"]["a"]}
    assert nxt.status["previous"]["parties"] == ["a", "b", "c"]


def test_indices_are_compacted_to_ranks_when_it_opens() -> None:
    spec = {"expected": 3}
    s = arrive_all(spec, ["a", "b", "c"][:2])
    s = bs.leave(spec, s, key="a")
    assert s is not None
    s = arrive_all(spec, ["d", "e"], s)
    assert s["phase"] == bs.OPEN
    assert s["parties"] == ["b", "d", "e"]
    assert sorted(e["index"] for e in s["arrivals"].values()) == [0, 1, 2]


def test_quorum_without_last_call_opens_at_quorum() -> None:
    spec = {"expected": 4, "quorum": 2}
    s = arrive_all(spec, ["a", "b"])
    assert s["phase"] == bs.OPEN
    assert s["arrived"] == 2


def test_quorum_with_last_call_starts_a_window_that_a_waiter_closes() -> None:
    spec = {"expected": 4, "quorum": 2, "lastCallSeconds": 5}
    s = arrive_all(spec, ["a"])
    assert bs.last_call_episode(spec, s) is None
    s = arrive_all(spec, ["b"], s)
    assert s["phase"] == bs.WAITING
    assert s["quorumReachedAt"] == NOW
    episode = bs.last_call_episode(spec, s)
    assert episode == (1, 1)
    s = arrive_all(spec, ["c"], s)  # a late party still gets in during the window
    assert bs.last_call_episode(spec, s) == episode
    opened = bs.open_last_call(spec, s, generation=1, episode=1, now=NOW)
    assert opened is not None
    assert opened["phase"] == bs.OPEN
    assert opened["parties"] == ["a", "b", "c"]


def test_all_expected_parties_end_the_last_call_at_once() -> None:
    spec = {"expected": 3, "quorum": 2, "lastCallSeconds": 60}
    s = arrive_all(spec, ["a", "b", "c"])
    assert s["phase"] == bs.OPEN


def test_a_dip_below_quorum_ends_the_window_and_a_new_one_is_a_new_episode() -> None:
    spec = {"expected": 4, "quorum": 2, "lastCallSeconds": 5}
    s = arrive_all(spec, ["a", "b"])
    left = bs.leave(spec, s, key="b")
    assert left is not None
    assert "quorumReachedAt" not in left
    assert bs.last_call_episode(spec, left) is None
    # A stale window cannot open the barrier any more.
    assert bs.open_last_call(spec, left, generation=1, episode=1, now=NOW) is None
    again = arrive_all(spec, ["c"], left)
    assert bs.last_call_episode(spec, again) == (1, 2)
    assert bs.open_last_call(spec, again, generation=1, episode=1, now=NOW) is None


def test_lowering_expected_is_applied_by_advance() -> None:
    s = arrive_all({"expected": 5}, ["a", "b"])
    assert bs.advance({"expected": 5}, s, now=NOW) is None
    opened = bs.advance({"expected": 2}, s, now=NOW)
    assert opened is not None
    assert opened["phase"] == bs.OPEN


def test_lowering_quorum_starts_the_window_through_advance() -> None:
    spec = {"expected": 5, "quorum": 4, "lastCallSeconds": 1}
    s = arrive_all(spec, ["a", "b"])
    marked = bs.advance({**spec, "quorum": 2}, s, now=NOW)
    assert marked is not None
    assert marked["phase"] == bs.WAITING
    assert bs.last_call_episode({**spec, "quorum": 2}, marked) == (1, 1)


def test_timeout_names_known_missing_parties_and_counts_the_rest() -> None:
    spec = {"expected": 3, "timeoutSeconds": 10}
    s = arrive_all(spec, ["a", "b", "c"])  # generation 1 opens with a, b, c
    s = arrive(spec, s, "a", after=1).status
    assert s is not None
    s = arrive_all(spec, ["b"], s)
    failed = bs.fail(spec, s, generation=2, reason=bs.TIMEOUT, message="late", now=NOW)
    assert failed is not None
    assert failed["phase"] == bs.FAILED
    assert failed["missing"] == ["c"]
    assert failed["parties"] == ["a", "b"]


def test_parties_never_seen_are_counted_not_named() -> None:
    spec = {"expected": 4}
    first = arrive_all(spec, ["x"])
    failed = bs.fail(spec, first, generation=1, reason=bs.TIMEOUT, message="", now=NOW)
    assert failed is not None
    assert failed["missing"] == ["<3 more>"]
    assert bs.outcome(failed, key="x", generation=1).missing == ("<3 more>",)


def test_fail_and_reset_only_touch_the_waiting_generation() -> None:
    spec = {"expected": 2}
    s = arrive_all(spec, ["a", "b"])
    assert bs.fail(spec, s, generation=1, reason=bs.TIMEOUT, message="", now=NOW) is None
    assert bs.reset(spec, s, now=NOW, message="") is None
    assert bs.reset(spec, {}, now=NOW, message="") is None  # nobody waiting: nothing to fail
    one = arrive_all(spec, ["a"])
    reset = bs.reset(spec, one, now=NOW, message="by test")
    assert reset is not None
    assert reset["reason"] == bs.RESET
    assert bs.fail(spec, reset, generation=1, reason=bs.TIMEOUT, message="", now=NOW) is None


def test_outcomes_for_a_waiter_that_missed_the_concluded_state() -> None:
    spec = {"expected": 2}
    s = arrive_all(spec, ["a", "b"])
    assert bs.outcome(s, key="a", generation=1) == bs.Outcome(
        bs.OPENED, 1, index=0, arrived=("a", "b")
    )
    s = arrive(spec, s, "b", after=1).status  # generation 2 starts; a never looked
    assert s is not None
    assert bs.outcome(s, key="a", generation=1).index == 0
    assert bs.outcome(s, key="b", generation=2).state == bs.PENDING
    reset = bs.reset(spec, s, now=NOW, message="r")
    assert reset is not None
    s = arrive(spec, reset, "c").status  # generation 3
    assert s is not None
    out = bs.outcome(s, key="b", generation=2)
    assert (out.state, out.reason) == (bs.FAILED_OUTCOME, bs.RESET)
    s = arrive_all(spec, ["d"], s)  # generation 3 opens with c, d
    s = arrive(spec, s, "e").status  # generation 4: generation 2 only in history now
    assert s is not None
    out = bs.outcome(s, key="b", generation=2)
    assert (out.state, out.reason) == (bs.FAILED_OUTCOME, bs.RESET)
    assert bs.outcome(s, key="a", generation=1).state == bs.UNKNOWN
    assert bs.outcome(s, key="zz", generation=3).state == bs.REMOVED
    assert bs.outcome(s, key="e", generation=9).state == bs.PENDING


def test_a_removed_arrival_is_reported_to_its_party() -> None:
    spec = {"expected": 3}
    s = arrive_all(spec, ["a", "b"])
    s = bs.leave(spec, s, key="a")
    assert s is not None
    assert bs.outcome(s, key="a", generation=1).state == bs.REMOVED


def test_leave_respects_generation_and_acquired_at() -> None:
    spec = {"expected": 3}
    s = arrive_all(spec, ["a"])
    assert bs.leave(spec, s, key="a", generation=2) is None
    assert bs.leave(spec, s, key="a", acquired_at="other") is None
    assert bs.leave(spec, s, key="nobody") is None
    assert bs.leave(spec, s, key="a", generation=1, acquired_at="t-a") is not None


def test_normalize_is_idempotent_and_total() -> None:
    for status in [
        {},
        {"phase": "bogus", "arrivals": [1, 2], "generation": -4},
        {"arrivals": {"a": "notamap", "b": {"index": "x"}}, "history": "h", "roster": [1, "r"]},
        arrive_all({"expected": 3}, ["a", "b", "c"]),
    ]:
        once = bs.normalize({"expected": 3}, status)
        assert bs.normalize({"expected": 3}, once) == once


def test_history_and_roster_are_bounded() -> None:
    spec = {"expected": 1}
    s: dict[str, Any] = {}
    for generation in range(1, 40):
        result = arrive(spec, s, f"p{generation}", after=generation - 1)
        assert result.status is not None
        s = result.status
    assert len(s["history"]) == bs.HISTORY_LIMIT
    assert s["history"][-1]["generation"] == 39
    assert len(s["roster"]) <= bs.ROSTER_LIMIT


def kobj(spec: dict[str, Any], status: dict[str, Any]) -> KObject:
    return KObject(
        {"metadata": {"name": "b", "namespace": "ns", "uid": "u1"}, "spec": spec, "status": status}
    )


def test_operator_rules_are_registered_for_barrier() -> None:
    rules = registered()["Barrier"]
    assert rules.kind == BARRIER
    assert rules.entry_maps == ("arrivals",)
    assert rules.normalize is bs.normalize


def test_operator_timer_runs_only_while_someone_waits() -> None:
    rules = bs.RULES
    assert rules.timer is not None
    spec = {"expected": 3, "timeoutSeconds": 7}
    assert rules.timer(kobj(spec, {})) is None
    s = arrive_all(spec, ["a"])
    assert rules.timer(kobj(spec, s)) == (("u1", 1), 7.0)
    assert rules.timer(kobj({"expected": 3}, s)) is None
    opened = arrive_all(spec, ["b", "c"], s)
    assert rules.timer(kobj(spec, opened)) is None


def test_operator_on_timeout_fails_with_missing_parties() -> None:
    spec = {"expected": 3, "timeoutSeconds": 7}
    s = arrive_all(spec, ["a", "b", "c"])
    s = arrive(spec, s, "a", after=1).status
    assert s is not None
    assert bs.RULES.on_timeout is not None
    failed = bs.RULES.on_timeout(kobj(spec, s))
    assert failed is not None
    assert failed["phase"] == bs.FAILED
    assert failed["reason"] == bs.TIMEOUT
    assert failed["missing"] == ["b", "c"]
    assert "timeoutSeconds=7" in failed["message"]
    assert bs.RULES.on_timeout(kobj(spec, failed)) is None  # nothing left to time out
    assert bs.normalize(spec, failed) == failed  # the operator would not see drift


def test_gauges_and_describe() -> None:
    spec = {"expected": 3}
    obj = kobj(spec, arrive_all(spec, ["a"]))
    assert bs.RULES.gauges is not None
    assert bs.RULES.describe is not None
    assert bs.RULES.gauges(obj) == {"arrived": 1.0, "expected": 3.0, "generation": 1.0, "open": 0.0}
    assert bs.RULES.describe(obj) == "generation 1 Waiting: 1/3 arrived"

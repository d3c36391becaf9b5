"""The pure Once state: claims, takeovers, one recorded outcome, release, reset."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from konductor_sdk._machines import once as os_
from konductor_sdk._machines.rules import registered

NOW = "2026-01-01T00:00:00.000000Z"


def entry(holder: str, session: str | None = None) -> dict[str, Any]:
    return {
        "holder": holder,
        "session": session or f"s-{holder}",
        "creator": "alice",
        "acquiredAt": f"t-{holder}",
    }


def claimed(key: str = "a#1") -> dict[str, Any]:
    s = os_.claim({}, {}, key=key, entry=entry(key), now=NOW)
    assert s is not None
    return s


def test_the_first_claim_runs_and_numbers_the_attempt() -> None:
    s = claimed()
    assert s["phase"] == os_.RUNNING
    assert s["attempts"] == 1
    assert s["holders"]["a#1"]["attempt"] == 1
    assert os_.claim({}, s, key="b#1", entry=entry("b#1"), now=NOW) is None


def test_a_takeover_replaces_exactly_the_run_judged_dead() -> None:
    s = claimed()
    judged = os_.marker("a#1", s["holders"]["a#1"])
    # The run was replaced (released and claimed again) after we judged it: no takeover.
    other = {**s, "holders": {"a#1": {**s["holders"]["a#1"], "session": "s-new"}}}
    assert os_.claim({}, other, key="b#1", entry=entry("b#1"), now=NOW, takeover=judged) is None
    taken = os_.claim({}, s, key="b#1", entry=entry("b#1"), now=NOW, takeover=judged)
    assert taken is not None
    assert list(taken["holders"]) == ["b#1"]
    assert taken["holders"]["b#1"]["attempt"] == 2
    assert taken["holders"]["b#1"]["session"] == "s-b#1"


def test_only_the_current_run_records_the_outcome() -> None:
    s = claimed()
    args = {"result": "1", "holder": "x", "now": NOW}
    assert os_.complete({}, s, key="b#1", attempt=1, **args) is None
    assert os_.complete({}, s, key="a#1", attempt=2, **args) is None
    done = os_.complete({}, s, key="a#1", attempt=1, **args)
    assert done is not None
    assert (done["phase"], done["result"], done["holders"]) == (os_.DONE, "1", {})
    # Concluded: no second outcome, no new claim.
    assert os_.complete({}, done, key="a#1", attempt=1, **args) is None
    assert (
        os_.fail({}, done, key="a#1", attempt=1, error_type="E", message="m", holder="x", now=NOW)
        is None
    )
    assert os_.claim({}, done, key="c#1", entry=entry("c#1"), now=NOW) is None
    released = os_.release({}, s, key="a#1", attempt=1)
    assert released is not None
    assert released["phase"] == os_.PENDING
    # A run that gave up (or was reaped) no longer records anything.
    assert os_.complete({}, released, key="a#1", attempt=1, **args) is None


def test_failure_is_recorded_and_truncated() -> None:
    failed = os_.fail(
        {},
        claimed(),
        key="a#1",
        attempt=1,
        error_type="ValueError",
        message="x" * 10_000,
        holder="a",
        now=NOW,
    )
    assert failed is not None
    assert failed["phase"] == os_.FAILED
    assert failed["error"]["type"] == "ValueError"
    assert len(failed["error"]["message"]) == os_.MAX_MESSAGE_CHARS


def test_release_by_key_whatever_the_attempt() -> None:
    s = claimed()
    assert os_.release({}, s, key="a#1", attempt=None) is not None
    assert os_.release({}, s, key="zz", attempt=None) is None


def test_a_reaped_runner_makes_the_once_pending_again() -> None:
    s = claimed()
    reaped = {**s, "holders": {}}
    assert os_.normalize({}, reaped)["phase"] == os_.PENDING


def test_reset_keeps_the_attempt_counter() -> None:
    done = os_.complete({}, claimed(), key="a#1", attempt=1, result="1", holder="a", now=NOW)
    assert done is not None
    fresh = os_.reset({}, {**done, "observedGeneration": 1})
    assert fresh is not None
    assert (fresh["phase"], fresh["attempts"], fresh["observedGeneration"]) == (os_.PENDING, 1, 1)
    assert "result" not in fresh
    assert os_.reset({}, fresh) is None
    again = os_.claim({}, fresh, key="b#1", entry=entry("b#1"), now=NOW)
    assert again is not None
    assert again["holders"]["b#1"]["attempt"] == 2


def test_registered_for_the_operator() -> None:
    rules = registered()["Once"]
    assert rules.entry_maps == ("holders",)


ops = st.lists(
    st.tuples(
        st.sampled_from(["claim", "takeover", "complete", "fail", "release", "reap"]),
        st.integers(0, 2),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_at_most_one_runner_and_one_outcome(sequence: list[tuple[str, int]]) -> None:
    s: dict[str, Any] = {}
    outcomes = 0
    attempts_seen: list[int] = []
    for op, who in sequence:
        key = f"k{who}"
        new: dict[str, Any] | None = None
        current = os_.runner(s)
        if op == "claim":
            new = os_.claim({}, s, key=key, entry=entry(key), now=NOW)
        elif op == "takeover" and current is not None:
            judged = os_.marker(*current)
            new = os_.claim({}, s, key=key, entry=entry(key), now=NOW, takeover=judged)
        elif op in ("complete", "fail") and current is not None:
            attempt = current[1]["attempt"] if current[0] == key else 0
            if op == "complete":
                new = os_.complete({}, s, key=key, attempt=attempt, result="1", holder=key, now=NOW)
            else:
                new = os_.fail(
                    {}, s, key=key, attempt=attempt, error_type="E", message="", holder=key, now=NOW
                )
        elif op == "release":
            new = os_.release({}, s, key=key, attempt=None)
        elif op == "reap" and current is not None:
            new = os_.normalize({}, {**s, "holders": {}})
        if new is None:
            continue
        if new["phase"] in (os_.DONE, os_.FAILED) and s.get("phase") not in (os_.DONE, os_.FAILED):
            outcomes += 1
        if s.get("phase") in (os_.DONE, os_.FAILED):
            assert new["phase"] == s["phase"]  # an outcome is final
        assert len(new["holders"]) <= 1
        for e in new["holders"].values():
            attempts_seen.append(e["attempt"])
        assert os_.normalize({}, new) == new
        s = new
    assert outcomes <= 1
    assert attempts_seen == sorted(attempts_seen)  # attempt numbers never go back

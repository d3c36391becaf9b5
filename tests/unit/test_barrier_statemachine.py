"""Hypothesis state machine over the pure barrier counters.

Processes of two users arrive in batches (and retry batches whose answer was "lost"),
parties leave, sessions die and the operator withdraws them, the creator resets and
changes ``expected``/``quorum``, waiters fire timeouts and last calls. Against a model it
checks what the API server's rules check (counters consistent, generation moves on by one
only from a concluded one, a concluded generation keeps its phase, Open only with enough
arrivals), that no batch is ever counted twice, that an opened generation gives the
parties that stayed the ranks ``0..arrived-1`` in arrival order, and that no party's
outcome ever changes once its generation concluded.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines import barrier as bs
from konductor_sdk._machines import barrier_outcome as bo
from konductor_sdk._machines import barrier_ranges as ranges

NOW = "2026-01-01T00:00:00.000000Z"
USERS = ["alice", "bob"]


class BarrierMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"expected": 4}
        self.status: dict[str, Any] = {}
        self.written_with: dict[str, Any] = dict(self.spec)
        self.ids = itertools.count()
        self.sessions = {u: f"s-{u}-0" for u in USERS}
        # batch id -> (generation, first, count, user, session)
        self.batches: dict[str, tuple[int, int, int, str, str]] = {}
        self.told: dict[tuple[int, int], tuple[str, int | None]] = {}
        self.concluded: dict[int, str] = {}

    # --- writes -------------------------------------------------------------------------

    def _set(self, new: dict[str, Any] | None) -> None:
        if new is None:
            return
        old = bs.normalize(self.written_with, self.status)
        g_old, g_new = old["generation"], new["generation"]
        assert g_new >= g_old
        if g_new == g_old + 1:
            assert old["phase"] != bs.WAITING, "moved on from a generation still waiting"
        else:
            assert g_new == g_old
            if old["phase"] != bs.WAITING:
                assert new["phase"] == old["phase"], "a concluded generation changed its phase"
                assert new["nextIndex"] == old["nextIndex"]
            else:
                assert new["nextIndex"] >= old["nextIndex"]
                assert ranges.total(new["departed"]) >= ranges.total(old["departed"])
        entering_open = new["phase"] == bs.OPEN and (g_new != g_old or old["phase"] != bs.OPEN)
        if entering_open:
            sp = bs.parse_spec(self.spec)
            assert new["arrived"] >= sp.effective_quorum
            self._check_ranks(new)
        if new["phase"] != bs.WAITING:
            self.concluded.setdefault(g_new, new["phase"])
            assert self.concluded[g_new] == new["phase"]
        self.status = new
        self.written_with = dict(self.spec)

    def _check_ranks(self, s: dict[str, Any]) -> None:
        generation = s["generation"]
        told = []
        for index in range(s["nextIndex"]):
            out = bo.outcome(s, generation=generation, index=index)
            if ranges.contains(s["departed"], index):
                assert out.state == bo.REMOVED
            else:
                assert out.state == bo.OPENED
                told.append(out.rank)
        assert told == list(range(s["arrived"])), "ranks are 0..arrived-1 in index order"

    @rule(user=st.sampled_from(USERS), count=st.integers(1, 5))
    def arrive(self, user: str, count: int) -> None:
        batch = f"b{next(self.ids)}"
        result = bs.arrive(
            self.spec,
            self.status,
            batch=batch,
            count=count,
            session=self.sessions[user],
            user=user,
            now=NOW,
        )
        assert not result.recorded
        assert result.count <= count
        if result.count:
            self.batches[batch] = (
                result.generation,
                result.first_index,
                result.count,
                user,
                self.sessions[user],
            )
        self._set(result.status)

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def a_lost_answer_is_retried(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(sorted(self.batches)))
        generation, first, count, user, session = self.batches[batch]
        result = bs.arrive(
            self.spec, self.status, batch=batch, count=count, session=session, user=user, now=NOW
        )
        if bs.find_batch(self.status, batch) is not None:
            assert result.recorded
            assert (result.generation, result.first_index, result.count) == (
                generation,
                first,
                count,
            )
            assert result.status is None
        else:
            # Dropped out of `recent`: the engine asks arrival_applied first and never
            # writes again when that cannot be told.
            verdict = bs.arrival_applied(
                self.status, batch=batch, generation=generation, first_index=first
            )
            assert verdict is not False, "an applied batch judged not applied"

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def a_party_leaves(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(sorted(self.batches)))
        generation, first, count, user, _ = self.batches[batch]
        index = data.draw(st.integers(first, first + count - 1))
        self._set(
            bs.depart(
                self.spec,
                self.status,
                generation=generation,
                spans=[(index, 1)],
                user=user,
                now=NOW,
            )
        )

    @rule(user=st.sampled_from(USERS), claimed=st.booleans())
    def a_session_dies(self, user: str, claimed: bool) -> None:
        dead = self.sessions[user]
        claims = []
        if claimed:  # its claims exist; else only `recent` knows (died before the claim)
            for name, (generation, first, count, owner, session) in self.batches.items():
                if session == dead:
                    claims.append(
                        KObject(
                            {
                                "metadata": {
                                    "name": name,
                                    "annotations": {"sync.konductor.io/creator": owner},
                                },
                                "spec": {
                                    "target": {"kind": "Barrier", "name": "b"},
                                    "session": session,
                                    "generation": generation,
                                    "firstIndex": first,
                                    "parties": [f"p{i}" for i in range(count)],
                                },
                            }
                        )
                    )
        obj = KObject(
            {"metadata": {"name": "b", "uid": "u"}, "spec": self.spec, "status": self.status}
        )
        self._set(bs.drop_sessions(obj, frozenset({dead}), claims))
        self.sessions[user] = f"s-{user}-{next(self.ids)}"

    @rule()
    def reset(self) -> None:
        self._set(bs.reset(self.spec, self.status, now=NOW, message="test"))

    @rule()
    def timeout_fires(self) -> None:
        s = bs.normalize(self.spec, self.status)
        if bs.timeout_seconds(self.spec, self.status) is not None:
            self._set(
                bs.fail(
                    self.spec, s, generation=s["generation"], reason=bs.TIMEOUT, message="", now=NOW
                )
            )

    @rule()
    def last_call_fires(self) -> None:
        episode = bs.last_call_episode(self.spec, self.status)
        if episode is not None:
            generation, number = episode
            self._set(
                bs.open_last_call(
                    self.spec, self.status, generation=generation, episode=number, now=NOW
                )
            )

    @rule()
    def a_waiter_advances(self) -> None:
        self._set(bs.advance(self.spec, self.status, now=NOW))
        s = bs.normalize(self.spec, self.status)
        if s["phase"] == bs.WAITING:
            assert s["arrived"] < bs.parse_spec(self.spec).expected

    @rule(expected=st.integers(1, 8))
    def set_expected(self, expected: int) -> None:
        quorum = self.spec.get("quorum")
        if quorum is None or quorum <= expected:
            self.spec = {**self.spec, "expected": expected}

    @rule(quorum=st.none() | st.integers(1, 8), last_call=st.sampled_from([None, 0, 5]))
    def set_quorum(self, quorum: int | None, last_call: int | None) -> None:
        spec = {k: v for k, v in self.spec.items() if k not in ("quorum", "lastCallSeconds")}
        if quorum is not None and quorum <= spec["expected"]:
            spec["quorum"] = quorum
            if last_call is not None:
                spec["lastCallSeconds"] = last_call
        self.spec = spec

    @rule(timeout=st.sampled_from([None, 30]))
    def set_timeout(self, timeout: int | None) -> None:
        spec = {k: v for k, v in self.spec.items() if k != "timeoutSeconds"}
        self.spec = spec if timeout is None else {**spec, "timeoutSeconds": timeout}

    # --- invariants ---------------------------------------------------------------------

    @precondition(lambda self: bool(self.status))
    @invariant()
    def stored_status_is_normalized_and_consistent(self) -> None:
        s = self.status
        assert bs.normalize(self.written_with, s) == s
        assert s["arrived"] == sum(s["arrivedBy"].values())
        assert s["arrived"] == s["nextIndex"] - ranges.total(s["departed"])
        assert len(s["departed"]) <= bs.DEPARTED_LIMIT
        ids = [r["batch"] for r in s["recent"]]
        assert len(ids) == len(set(ids)), "a batch recorded twice"

    @invariant()
    def per_user_counts_match_the_batches(self) -> None:
        s = bs.normalize(self.spec, self.status)
        if s["phase"] != bs.WAITING:
            return
        counts: dict[str, int] = {}
        for generation, first, count, user, _ in self.batches.values():
            if generation == s["generation"]:
                gaps = ranges.missing_from(s["departed"], first, count)
                live = sum(c for _, c in gaps)
                if live:
                    counts[user] = counts.get(user, 0) + live
        assert counts == s["arrivedBy"]

    @invariant()
    def no_party_is_told_two_different_outcomes(self) -> None:
        for generation, first, count, _, _ in self.batches.values():
            for index in range(first, first + count):
                out = bo.outcome(self.status, generation=generation, index=index)
                if out.state in (bo.PENDING, bo.UNKNOWN):
                    continue
                if out.state == bo.REMOVED and generation not in self.concluded:
                    continue  # withdrawn while it still waits
                told = (out.state, out.rank)
                seen = self.told.setdefault((generation, index), told)
                assert seen == told, (generation, index, seen, told)

    @invariant()
    def the_shared_view_answers_like_the_functions(self) -> None:
        v = bo.view(self.spec, self.status)
        assert v.advance_due == (bs.advance(self.spec, self.status, now=NOW) is not None)
        assert v.timeout == bs.timeout_seconds(self.spec, self.status)
        assert v.last_call == bs.last_call_episode(self.spec, self.status)


TestBarrierMachine = BarrierMachine.TestCase
TestBarrierMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)

"""Hypothesis state machine over the pure barrier state.

Parties arrive, leave, look at the outcome; the operator reaps arrivals and times out;
creators change ``expected``/``quorum``; waiters fire last calls and advance. Against a
model it checks that every generation concludes exactly once and never changes its mind,
that an opened generation has ranks ``0..n-1``, that no party passes a generation twice,
and that every stored status is already normalized (the operator would see no drift).
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from konductor_sdk._machines import barrier as bs

PARTIES = [f"p{i}" for i in range(6)]
NOW = "2026-01-01T00:00:00.000000Z"


class BarrierMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"expected": 3}
        self.status: dict[str, Any] = {}
        self.joined: dict[str, int] = {}  # party -> generation it waits in
        self.completed: dict[str, int] = dict.fromkeys(PARTIES, 0)
        self.concluded: dict[int, str] = {}  # generation -> Open/Failed, first seen
        self.ranks: dict[int, dict[str, int]] = {}  # generation -> party -> index told
        self.passed: set[tuple[str, int]] = set()
        self.arrivals = 0
        self.written_with: dict[str, Any] = {}
        self.arrival_seq: dict[str, int] = {}  # the spec the last write was computed on

    def _set(self, new: dict[str, Any] | None) -> None:
        if new is None:
            return
        old_generation = self.status.get("generation", 1)
        assert new["generation"] in (old_generation, old_generation + 1)
        concluded = new["phase"] != bs.WAITING and new["generation"] == old_generation
        if concluded and self.status.get("phase", bs.WAITING) == bs.WAITING:
            self._on_conclude(new)
        self.status = new
        self.written_with = dict(self.spec)

    def _on_conclude(self, s: dict[str, Any]) -> None:
        generation = s["generation"]
        assert generation not in self.concluded, "a generation concluded twice"
        self.concluded[generation] = s["phase"]
        if s["phase"] == bs.OPEN:
            parties = s["parties"]
            # Ranks 0..n-1, in arrival order.
            assert [s["arrivals"][p]["index"] for p in parties] == list(range(len(parties)))
            assert parties == sorted(parties, key=self.arrival_seq.__getitem__)
            assert s["arrived"] == len(parties) >= 1

    @rule(party=st.sampled_from(PARTIES))
    def arrive(self, party: str) -> None:
        if party in self.joined:
            return  # the SDK never arrives twice without finishing
        before = bs.normalize(self.spec, self.status)
        result = bs.arrive(
            self.spec,
            self.status,
            key=party,
            entry={"holder": party, "acquiredAt": f"t{self.arrivals}", "ttlSeconds": 5},
            after_generation=self.completed[party],
            now=NOW,
        )
        self.arrivals += 1
        if result.status is not None:
            self.arrival_seq[party] = self.arrivals
            if before["phase"] != bs.WAITING:
                assert result.generation == before["generation"] + 1
                # The new generation started and maybe concluded in the same write.
                self.status = {**before, "generation": result.generation, "phase": bs.WAITING}
            self._set(result.status)
        self.joined[party] = result.generation

    @rule(party=st.sampled_from(PARTIES))
    def leave(self, party: str) -> None:
        generation = self.joined.get(party)
        if generation is None:
            return
        self._set(bs.leave(self.spec, self.status, key=party, generation=generation))
        del self.joined[party]

    @rule(party=st.sampled_from(PARTIES))
    def operator_reaps(self, party: str) -> None:
        s = bs.normalize(self.spec, self.status)
        if party in s["arrivals"]:
            del s["arrivals"][party]
            self._set(bs.normalize(self.spec, s))

    @rule(party=st.sampled_from(PARTIES))
    def party_looks(self, party: str) -> None:
        generation = self.joined.get(party)
        if generation is None:
            return
        out = bs.outcome(self.status, key=party, generation=generation)
        if out.state == bs.PENDING:
            return
        # A party removed from a generation may arrive in it again (it still waits), but
        # it passes a generation at most once.
        if out.state == bs.OPENED:
            assert (party, generation) not in self.passed, "a party passed a generation twice"
            self.passed.add((party, generation))
        if out.state == bs.OPENED:
            assert self.concluded[generation] == bs.OPEN
            ranks = self.ranks.setdefault(generation, {})
            assert out.index is not None
            assert out.index not in ranks.values(), "two parties got the same index"
            ranks[party] = out.index
        elif out.state == bs.FAILED_OUTCOME:
            assert self.concluded[generation] == bs.FAILED
        del self.joined[party]
        self.completed[party] = generation

    @rule()
    def reset(self) -> None:
        self._set(bs.reset(self.spec, self.status, now=NOW, message="test"))

    @rule()
    def timeout_fires(self) -> None:
        s = bs.normalize(self.spec, self.status)
        self._set(
            bs.fail(
                self.spec, s, generation=s["generation"], reason=bs.TIMEOUT, message="", now=NOW
            )
        )

    @rule()
    def last_call_fires(self) -> None:
        episode = bs.last_call_episode(self.spec, self.status)
        if episode is None:
            return
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

    @rule(expected=st.integers(1, 6))
    def set_expected(self, expected: int) -> None:
        quorum = self.spec.get("quorum")
        if quorum is None or quorum <= expected:
            self.spec = {**self.spec, "expected": expected}

    @rule(quorum=st.none() | st.integers(1, 6), last_call=st.sampled_from([None, 0, 5]))
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

    @precondition(lambda self: bool(self.status))
    @invariant()
    def stored_status_is_normalized(self) -> None:
        # Normalized for the spec it was computed on (a later spec change may leave drift
        # that the next writer, or the operator, normalizes away).
        assert bs.normalize(self.written_with, self.status) == self.status

    @precondition(lambda self: bool(self.status))
    @invariant()
    def concluded_generations_keep_their_phase(self) -> None:
        s = self.status
        if s["phase"] != bs.WAITING:
            assert self.concluded.get(s["generation"]) == s["phase"]
        for record in s["history"]:
            assert self.concluded[record["generation"]] == record["phase"]
        previous = s.get("previous")
        if previous:
            assert self.concluded[previous["generation"]] == previous["phase"]

    @precondition(lambda self: bool(self.status))
    @invariant()
    def waiting_arrivals_have_unique_indices(self) -> None:
        s = self.status
        if s["phase"] == bs.WAITING:
            indices = [e["index"] for e in s["arrivals"].values()]
            assert len(indices) == len(set(indices))
            assert all(i < s["nextIndex"] for i in indices)
            assert all(e["generation"] == s["generation"] for e in s["arrivals"].values())

    @invariant()
    def the_shared_view_answers_like_the_functions(self) -> None:
        # Waiting parties of a process read one View per version instead of calling these.
        v = bs.view(self.spec, self.status)
        assert v.advance_due == (bs.advance(self.spec, self.status, now=NOW) is not None)
        assert v.timeout == bs.timeout_seconds(self.spec, self.status)
        assert v.last_call == bs.last_call_episode(self.spec, self.status)
        assert v.last_call_seconds == bs.parse_spec(self.spec).last_call_seconds
        for party in PARTIES:
            for generation in range(1, v.status["generation"] + 2):
                assert bs.outcome_of(v.status, key=party, generation=generation) == bs.outcome(
                    self.status, key=party, generation=generation
                )


TestBarrierMachine = BarrierMachine.TestCase
TestBarrierMachine.settings = settings(max_examples=400, stateful_step_count=50, deadline=None)

"""A hypothesis state machine over the pure lease state, with time in the model.

Participants act on one shared status through the real functions of ``_lease_state``.
Time only moves forward. Holders and candidates renew on schedule (every ``ttl/3``, as
their background renewers do) unless the machine *pauses* them (a crash, a partition, a
long GC pause). Every participant and the operator judge expiry on what they observed and
when, exactly as ``_lease_waiter.observe_entries`` does, and observe every write at once:
the earliest possible "first seen" is the worst case for safety. A holder believes it holds
until ``(send time of its last successful write) + ttl - safety_margin(ttl)``, as
``HeldLease.deadline`` does.

Invariants are the lease's promises: one holder entry, strictly increasing tokens, and at
every grant, every earlier holder stopped believing at least the safety margin before.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from konductor_sdk import WouldBlock
from konductor_sdk._kernel.entries import safety_margin
from konductor_sdk._machines import lease as state

TTL = 5
RENEW_EVERY = TTL / 3
MARGIN = safety_margin(TTL)
SPEC = {"ttlSeconds": TTL}
PARTICIPANTS = 3
WHO = st.integers(0, PARTICIPANTS - 1)
STEP = st.sampled_from([0.0, 0.0, 0.25, 1.0, 2.5, 5.5])


@attrs.define
class Participant:
    name: str
    priority: int
    seen: dict[str, tuple[Any, float]] = attrs.field(factory=dict)
    held: tuple[str, int] | None = None
    deadline: float = 0.0
    last_renew: float = 0.0
    candidate: str | None = None
    candidate_renew: float = 0.0
    paused: bool = False
    keys: int = 0

    def new_key(self) -> str:
        self.keys += 1
        return f"{self.name}#{self.keys}"


def expiry_time(first_seen: float, ttl: float) -> float:
    """When an observer may call an entry expired (``ExpiryTracker.expires_at``)."""
    return first_seen + ttl


def observe(seen: dict[str, tuple[Any, float]], status: dict[str, Any], now: float) -> set[str]:
    """``_lease_waiter.observe_entries``: restart an entry's clock when its marker changed."""
    expired = set()
    present = set()
    for map_name in ("holders", "candidates"):
        for key, e in status.get(map_name, {}).items():
            marker = (e["holder"], e.get("token"), e["renewCount"])
            if key not in seen or seen[key][0] != marker:
                seen[key] = (marker, now)
            present.add(key)
            if now >= expiry_time(seen[key][1], e["ttlSeconds"]):
                expired.add(key)
    for key in set(seen) - present:
        del seen[key]
    return expired


def new_entry(p: Participant) -> dict[str, Any]:
    return {"holder": p.name, "ttlSeconds": TTL, "renewCount": 0}


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.status: dict[str, Any] = {}
        self.people: list[Participant] = []
        self.operator_seen: dict[str, tuple[Any, float]] = {}
        self.tokens: list[int] = []

    @initialize(priorities=st.lists(st.sampled_from([0, 0, 1, 2]), min_size=3, max_size=3))
    def setup(self, priorities: list[int]) -> None:
        self.people = [Participant(f"p{i}", prio) for i, prio in enumerate(priorities)]

    def believes(self, p: Participant) -> bool:
        return p.held is not None and self.now < p.deadline

    def written(self) -> None:
        for p in self.people:
            observe(p.seen, self.status, self.now)
        observe(self.operator_seen, self.status, self.now)

    def advance(self, dt: float) -> None:
        """Let time pass; unpaused owners renew on schedule, as their renewers do."""
        end = self.now + dt
        while True:
            due = [
                (p.last_renew + RENEW_EVERY, p, True)
                for p in self.people
                if p.held and not p.paused
            ] + [
                (p.candidate_renew + RENEW_EVERY, p, False)
                for p in self.people
                if p.candidate and not p.paused
            ]
            due = [d for d in due if d[0] <= end]
            if not due:
                break
            at, p, holder = min(due, key=lambda d: d[0])
            self.now = max(self.now, at)
            if holder:
                self.renew_holder(p)
            else:
                self.renew_candidate(p)
        self.now = end

    def renew_holder(self, p: Participant) -> None:
        assert p.held is not None
        if self.now >= p.deadline:
            p.held = None  # the holder gives up on its own clock
            return
        key, token = p.held
        entry = self.status.get("holders", {}).get(key)
        if entry is None or entry["token"] != token:
            p.held = None  # the JSON patch's "test" failed
            return
        entry["renewCount"] += 1  # only the owner writes it: a patch, not a CAS
        p.deadline = self.now + TTL - MARGIN
        p.last_renew = self.now
        self.written()

    def renew_candidate(self, p: Participant) -> None:
        entry = self.status.get("candidates", {}).get(p.candidate or "")
        p.candidate_renew = self.now
        if entry is None:
            p.candidate = None
        else:
            entry["renewCount"] += 1
            self.written()

    @rule(dt=STEP)
    def wait(self, dt: float) -> None:
        self.advance(dt)

    @rule(i=WHO, dt=STEP)
    def pause_or_resume(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        p.paused = not p.paused
        if not p.paused:
            p.last_renew = p.candidate_renew = self.now - RENEW_EVERY  # catch up at once
            self.advance(0.0)

    @rule(i=WHO, dt=STEP)
    def try_acquire(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.held is not None or p.paused:
            return
        expired = observe(p.seen, self.status, self.now)
        key = p.new_key()
        try:
            new = state.acquire(
                SPEC,
                self.status,
                key=key,
                entry=new_entry(p),
                priority=p.priority,
                expired=frozenset(expired),
                candidate_key=p.candidate,
            )
        except WouldBlock:
            return
        late = [
            q.name
            for q in self.people
            if q is not p and q.held is not None and q.deadline + MARGIN > self.now
        ]
        assert not late, f"{p.name} granted at {self.now} while {late} held until too late"
        token = new["holders"][key]["token"]
        assert not self.tokens or token > self.tokens[-1]
        self.tokens.append(token)
        self.status = new
        p.held = (key, token)
        p.deadline = self.now + TTL - MARGIN
        p.last_renew = self.now
        p.candidate = None
        self.written()

    @rule(i=WHO)
    def try_acquire_at_expiry(self, i: int) -> None:
        # What a real waiter does: sleep until the earliest moment an entry it watches
        # could be expired on its clock, then try.
        p = self.people[i]
        observe(p.seen, self.status, self.now)
        ttls = {
            k: e["ttlSeconds"]
            for m in ("holders", "candidates")
            for k, e in self.status.get(m, {}).items()
        }
        times = [expiry_time(first, ttls[k]) for k, (_, first) in p.seen.items() if k in ttls]
        if times and min(times) > self.now:
            self.advance(min(times) - self.now)
        self.try_acquire(i, 0.0)

    @rule(i=WHO, dt=STEP)
    def release(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.held is None or p.paused:
            return
        key, token = p.held
        p.held = None
        self.status = state.release(SPEC, self.status, key=key, token=token) or self.status
        self.written()

    @rule(i=WHO, dt=STEP)
    def hand_over_if_asked(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.held is not None and state.yield_to(self.status, key=p.held[0], identity=p.name):
            self.release(i, 0.0)

    @rule(i=WHO, dt=STEP)
    def register(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.held is not None or p.candidate is not None or p.paused:
            return
        expired = observe(p.seen, self.status, self.now)
        key = p.new_key()
        new = state.register_candidate(
            SPEC,
            self.status,
            key=key,
            entry=new_entry(p),
            priority=p.priority,
            expired=frozenset(expired),
        )
        if new is not None:
            self.status = new
            p.candidate = key
            p.candidate_renew = self.now
            self.written()

    @rule(i=WHO, dt=STEP)
    def give_up_waiting(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.candidate is not None and not p.paused:
            keys = frozenset({p.candidate})
            self.status = state.forget(SPEC, self.status, keys=keys) or self.status
            p.candidate = None
            self.written()

    @rule(dt=STEP)
    def operator_reaps(self, dt: float) -> None:
        self.advance(dt)
        expired = observe(self.operator_seen, self.status, self.now)
        if not expired:
            return
        new = dict(self.status)
        for map_name in ("holders", "candidates"):
            new[map_name] = {k: v for k, v in new[map_name].items() if k not in expired}
        self.status = state.normalize(SPEC, new)
        self.written()

    @invariant()
    def at_most_one_holder_entry(self) -> None:
        assert len(self.status.get("holders", {})) <= 1

    @invariant()
    def at_most_one_believer(self) -> None:
        believers = [p.name for p in self.people if self.believes(p)]
        assert len(believers) <= 1, believers

    @invariant()
    def derived_fields_are_consistent(self) -> None:
        if self.status:
            norm = state.normalize(SPEC, self.status)
            for field in ("holder", "preferredHolder", "fencingToken", "transitions"):
                assert norm[field] == self.status[field]

    @invariant()
    def holder_has_the_last_token(self) -> None:
        current = state.holder_entry(self.status)
        if current is not None:
            assert current[1]["token"] == self.status["fencingToken"] == self.tokens[-1]
        if self.tokens:
            assert self.status["fencingToken"] == self.tokens[-1] == len(self.tokens)


LeaseMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestLeaseMachine = LeaseMachine.TestCase

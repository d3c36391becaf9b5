"""A hypothesis state machine over the pure lease protocol, with time, claims, sessions,
two users and the operator in the model.

Participants act on one shared status through the real functions of
``konductor_sdk._machines.lease``: they judge with :func:`~konductor_sdk._machines.lease.judge`
and write its JSON patches, applied as the API server would (all or nothing, ``test`` ops
checked on the current version; ``tests/unit/_jsonpatch.py``), plus the ownership policy
(``policies/lease.yaml``: an entry is removed only by its creator or the operator). Each
waiting participant is a claim in a queue ordered ``(-priority, creation)``.

Time only moves forward. Holders renew their entry and every participant its session on
schedule (every ``ttl/3``) unless the machine *pauses* it (a crash, a partition, SIGSTOP).
Every participant and the operator judge expiry on what they observed and when, exactly as
``LeaseView`` and the operator do, and observe every write at once: the earliest possible
"first seen" is the worst case for safety. A holder believes it holds until its deadline:
``min(entry's last send + ttl - margin, session's last send + ttl - margin)``, as
``HeldLease.deadline``. The operator removes holder entries it judged expired, and the
entries and claims of sessions it judged dead.

Invariants: one holder entry; strictly increasing tokens, +1 per grant; no drift for the
operator to repair; at every grant, every earlier holder stopped believing at least the
safety margin before; an entry is only ever removed by its creator or the operator.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from konductor_sdk._kernel.sessions import safety_margin
from konductor_sdk._machines import lease as state
from tests.unit._jsonpatch import PatchFailed, apply_patch

TTL = 6
RENEW_EVERY = TTL / 3
MARGIN = safety_margin(TTL)
SPEC = {"ttlSeconds": TTL}
PARTICIPANTS = 4
USERS = ("alice", "alice", "bob", "bob")
OPERATOR = "system:serviceaccount:konductor:operator"
WHO = st.integers(0, PARTICIPANTS - 1)
STEP = st.sampled_from([0.0, 0.0, 0.25, 1.0, 2.5, 6.5, 13.0])
FRESH = state.normalize(SPEC, {})


@attrs.define
class Session:
    name: str
    last_ok_sent: float
    lost: bool = False

    @property
    def deadline(self) -> float:
        return self.last_ok_sent + TTL - MARGIN


@attrs.define
class Observer:
    """What one process knows beyond the object (``LeaseView``'s bookkeeping)."""

    seen: dict[str, tuple[Any, float]] = attrs.Factory(dict)  # holder key -> (marker, first)
    free: tuple[Any, float] | None = None
    passed_over: set[str] = attrs.Factory(set)


@attrs.define
class Participant:
    name: str
    user: str
    priority: int
    view: Observer = attrs.Factory(Observer)
    session: Session | None = None
    claim: str | None = None
    held: tuple[str, int] | None = None
    entry_sent: float = 0.0
    last_renew: float = 0.0
    paused: bool = False
    keys: int = 0

    def deadline(self) -> float:
        assert self.session is not None
        return min(self.entry_sent + TTL - MARGIN, self.session.deadline)


def observe(view: Observer, status: dict[str, Any], queue: list[Any], own: str | None, now: float):
    current = state.holder_entry(status)
    if current is None:
        view.seen.clear()
        marker = ("free", status["fencingToken"])
        if view.free is None or view.free[0] != marker:
            view.free = (marker, now)
        return
    view.free = None
    key, entry = current
    mark = (entry["holder"], entry["token"], entry["renewCount"])
    if key not in view.seen or view.seen[key][0] != mark:
        view.seen = {key: (mark, now)}
    claim = entry.get("claim")
    if claim and claim not in view.passed_over:
        view.passed_over.add(claim)
        order = [c[2] for c in queue]
        if claim in order:
            view.passed_over |= {c for c in order[: order.index(claim)] if c != own}


class LeaseProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.status: dict[str, Any] = dict(FRESH)
        self.people: list[Participant] = []
        self.queue: list[tuple[int, int, str, int]] = []  # (-priority, seq, name, who)
        self.sessions: dict[str, Session] = {}  # live Session objects on the server
        self.seq = 0
        self.operator = Observer()
        self.operator_sessions: dict[str, tuple[float, float]] = {}  # name -> (sent seen, at)
        self.tokens: list[int] = []

    @initialize(priorities=st.lists(st.sampled_from([0, 0, 1, 2]), min_size=4, max_size=4))
    def setup(self, priorities: list[int]) -> None:
        self.people = [Participant(f"p{i}", USERS[i], prio) for i, prio in enumerate(priorities)]
        # Start every example contended; hypothesis explores from there.
        for i in range(PARTICIPANTS):
            self.act(i, queue_if_blocked=True)

    # -- the server --------------------------------------------------------------------

    def write(self, who: str, ops: list[dict[str, Any]]) -> bool:
        """Apply a status patch as the API server would, admission included."""
        try:
            doc = apply_patch({"status": self.status}, ops)
        except PatchFailed:
            return False
        new = doc["status"]
        old_holders, new_holders = self.status["holders"], new["holders"]
        for key, entry in old_holders.items():
            if (key not in new_holders or new_holders[key] != entry) and who != OPERATOR:
                assert entry["creator"] == who, f"{who} changed {entry['creator']}'s entry"
        self.status = new
        self.written()
        return True

    def written(self) -> None:
        for p in self.people:
            observe(p.view, self.status, self.queue, p.claim, self.now)
        observe(self.operator, self.status, self.queue, None, self.now)

    # -- time --------------------------------------------------------------------------

    def advance(self, dt: float) -> None:
        """Let time pass; unpaused owners renew on schedule, as their renewers do."""
        end = self.now + dt
        while True:
            due: list[tuple[float, int, str]] = []
            for i, p in enumerate(self.people):
                if p.paused:
                    continue
                if p.session is not None and not p.session.lost:
                    due.append((p.session.last_ok_sent + RENEW_EVERY, i, "session"))
                if p.held is not None:
                    due.append((p.last_renew + RENEW_EVERY, i, "entry"))
            due = [d for d in due if d[0] <= end]
            if not due:
                break
            at, i, what = min(due)
            self.now = max(self.now, at)
            p = self.people[i]
            if what == "session":
                self.renew_session(p)
            else:
                self.renew_entry(p)
        self.now = end

    def renew_session(self, p: Participant) -> None:
        assert p.session is not None
        if self.now >= p.session.deadline or p.session.name not in self.sessions:
            p.session.lost = True  # for good; the next acquisition gets a new one
            return
        p.session.last_ok_sent = self.now
        self.operator_sessions[p.session.name] = (self.now, self.now)

    def renew_entry(self, p: Participant) -> None:
        assert p.held is not None
        p.last_renew = self.now
        if self.now >= p.deadline():
            p.held = None  # gave up on its own clock
            return
        key, token = p.held
        count = self.status["holders"].get(key, {}).get("renewCount", 0) + 1
        ops = state.renew_patch(key=key, token=token, renew_count=count, now="t")
        if self.write(p.user, ops):
            p.entry_sent = self.now
        else:
            p.held = None  # the "test" failed: no longer ours

    # -- participants ------------------------------------------------------------------

    def ensure_session(self, p: Participant) -> None:
        if p.session is None or p.session.lost or self.now >= p.session.deadline:
            if p.claim is not None:
                self.drop_claim(p)  # it lived with the old session: place forfeit
            self.seq += 1
            p.session = Session(f"{p.name}-s{self.seq}", self.now)
            self.sessions[p.session.name] = p.session
            self.operator_sessions[p.session.name] = (self.now, self.now)

    def drop_claim(self, p: Participant) -> None:
        self.queue = [c for c in self.queue if c[2] != p.claim]
        p.claim = None

    def observation(self, p: Participant) -> state.Observation:
        current = state.holder_entry(self.status)
        expires = None
        if current is not None and current[0] in p.view.seen:
            expires = p.view.seen[current[0]][1] + current[1]["ttlSeconds"]
        live = [c for c in sorted(self.queue) if c[2] not in p.view.passed_over or c[2] == p.claim]
        if p.claim is not None:
            ahead = [c[2] for c in live].index(p.claim)
        else:
            ahead = sum(1 for c in live if -c[0] >= p.priority)
        return state.Observation(
            now=self.now,
            holder_expires_at=expires,
            free_since=p.view.free[1] if p.view.free else None,
            may_remove_holder=current is not None and current[1]["creator"] == p.user,
            ahead=ahead,
        )

    def act(self, i: int, *, queue_if_blocked: bool) -> None:
        p = self.people[i]
        if p.paused or p.held is not None:
            return
        self.ensure_session(p)
        assert p.session is not None
        verdict = state.judge(
            SPEC, self.status, self.observation(p), identity=p.name, priority=p.priority
        )
        if verdict.action == "grant":
            self.grant(p)
        elif p.claim is None:
            if queue_if_blocked:
                self.seq += 1
                p.claim = f"{p.name}-c{self.seq}"
                self.queue.append((-p.priority, self.seq, p.claim, i))
        elif verdict.action == "prefer":
            current = state.holder_entry(self.status)
            assert current is not None
            ops = state.prefer_patch(key=current[0], token=current[1]["token"], identity=p.name)
            if self.write(p.user, ops):
                event("asked for a handoff")

    def grant(self, p: Participant) -> None:
        assert p.session is not None
        p.keys += 1
        key = f"{p.name}#{p.keys}"
        entry = {
            "holder": p.name,
            "creator": p.user,
            "session": p.session.name,
            "ttlSeconds": TTL,
            "renewCount": 0,
            "priority": p.priority,
        }
        if p.claim is not None:
            entry["claim"] = p.claim
        ops, token = state.grant_patch(self.status, key=key, entry=entry)
        taking_over = bool(self.status["holders"])
        late = [
            q.name
            for q in self.people
            if q is not p and q.held is not None and q.deadline() + MARGIN > self.now
        ]
        if not self.write(p.user, ops):
            return
        assert not late, f"{p.name} granted at {self.now} while {late} believed until too late"
        assert not self.tokens or token == self.tokens[-1] + 1
        event("grant: take-over" if taking_over else "grant: free lease")
        self.tokens.append(token)
        p.held, p.entry_sent, p.last_renew = (key, token), self.now, self.now
        if p.claim is not None:
            self.drop_claim(p)

    @rule(dt=STEP)
    def wait(self, dt: float) -> None:
        self.advance(dt)

    @rule(i=WHO, dt=STEP)
    def pause_or_resume(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        p.paused = not p.paused
        if not p.paused:
            if p.held is not None and self.now >= p.deadline():
                p.held = None  # on resume it reads its clock: lost
            if p.claim is not None and p.claim not in {c[2] for c in self.queue}:
                p.claim = None  # reaped meanwhile

    @rule(dt=STEP)
    def freeze_the_holder(self, dt: float) -> None:
        # SIGSTOP, a partition, a crash: the holder stops renewing (and its session too).
        self.advance(dt)
        for p in self.people:
            if p.held is not None:
                p.paused = True

    @rule(i=WHO, dt=STEP)
    def want_it(self, i: int, dt: float) -> None:
        self.advance(dt)
        self.act(i, queue_if_blocked=True)

    @rule(i=WHO, early=st.sampled_from([0.0, 0.0, 0.1, 0.5]))
    def act_at_its_time(self, i: int, early: float) -> None:
        # What a real waiter does: sleep until its verdict's time, then act; or it is woken
        # by some change a little ``early`` and judges then.
        p = self.people[i]
        if p.paused or p.held is not None or p.claim is None or p.session is None:
            return
        verdict = state.judge(
            SPEC, self.status, self.observation(p), identity=p.name, priority=p.priority
        )
        if verdict.at is not None and verdict.at - early > self.now:
            self.advance(verdict.at - early - self.now)
        self.act(i, queue_if_blocked=True)

    @rule(i=WHO, dt=STEP)
    def nowait(self, i: int, dt: float) -> None:
        self.advance(dt)
        if self.people[i].claim is None:
            self.act(i, queue_if_blocked=False)

    @rule(i=WHO, dt=STEP)
    def release(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.held is None or p.paused:
            return
        key, token = p.held
        p.held = None
        self.write(p.user, state.release_patch(key=key, token=token))

    @rule(i=WHO, dt=STEP)
    def hand_over_if_asked(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.held is not None and state.yield_to(self.status, key=p.held[0], identity=p.name):
            self.release(i, 0.0)

    @rule(i=WHO, dt=STEP)
    def give_up_waiting(self, i: int, dt: float) -> None:
        self.advance(dt)
        p = self.people[i]
        if p.claim is not None and not p.paused:
            self.drop_claim(p)

    @rule(dt=STEP)
    def operator_reaps(self, dt: float) -> None:
        self.advance(dt)
        now = self.now
        dead = set()
        for name, (sent, at) in list(self.operator_sessions.items()):
            session = self.sessions.get(name)
            if session is None:
                continue
            if session.last_ok_sent != sent:
                self.operator_sessions[name] = (session.last_ok_sent, now)  # seen renewed
            elif now >= at + TTL:
                dead.add(name)
        for name in dead:
            del self.sessions[name]
        self.queue = [c for c in self.queue if self.people[c[3]].session is None
                      or self.people[c[3]].session.name not in dead]  # fmt: skip
        for p in self.people:
            if p.claim is not None and p.claim not in {c[2] for c in self.queue}:
                p.claim = None
        observe(self.operator, self.status, self.queue, None, now)
        current = state.holder_entry(self.status)
        if current is None:
            return
        key, entry = current
        first_seen = self.operator.seen[key][1]
        if (
            entry["session"] in dead
            or entry["session"] not in self.sessions
            or (now >= first_seen + entry["ttlSeconds"])
        ):
            event("operator removed the holder")
            new = state.forget(SPEC, self.status, keys={key})
            assert new is not None
            self.status = new
            self.written()

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def at_most_one_holder_entry(self) -> None:
        assert len(self.status["holders"]) <= 1

    @invariant()
    def at_most_one_believer(self) -> None:
        believers = [p.name for p in self.people if p.held and self.now < p.deadline()]
        assert len(believers) <= 1, believers

    @invariant()
    def nothing_for_the_operator_to_repair(self) -> None:
        assert state.normalize(SPEC, self.status) == self.status

    @invariant()
    def holder_has_the_last_token(self) -> None:
        current = state.holder_entry(self.status)
        if current is not None:
            assert current[1]["token"] == self.status["fencingToken"] == self.tokens[-1]
        assert self.status["fencingToken"] == len(self.tokens)
        assert self.status["transitions"] == len(self.tokens)


LeaseProtocol.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestLeaseProtocol = LeaseProtocol.TestCase

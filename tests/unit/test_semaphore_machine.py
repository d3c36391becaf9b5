"""Hypothesis state machine: the pure semaphore state against a plain model.

Rules mirror what happens to an object: requests (blocking, nowait, burst), releases,
renewals, the operator reaping expired entries, a waiter's own write, limit changes. After
every step the implementation's holders must equal the model's, and the safety and
fairness invariants must hold on the implementation's own status.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from konductor_sdk import ConfigurationError, WouldBlock
from konductor_sdk._machines import semaphore as st

SEM = st.SEMAPHORE_FLAVOR
NOW = "2026-01-01T00:00:00.000000Z"


@attrs.define
class Req:
    key: str
    weight: int
    priority: int
    ticket: int
    preemptible: bool
    allow_burst: bool


class Model:
    """The rules restated over plain lists, independently of the implementation."""

    def __init__(self, permits: int, burst: int) -> None:
        self.permits = permits
        self.burst = burst
        self.queue: list[Req] = []
        self.held: dict[str, tuple[Req, bool]] = {}  # key -> (request, is_burst)
        self.ticket = 0

    def used(self) -> int:
        return sum(r.weight for r, _ in self.held.values())

    def can_ever(self, r: Req) -> bool:
        return r.weight <= self.permits or (r.allow_burst and r.weight <= self.permits + self.burst)

    def ordered(self) -> list[Req]:
        return sorted(self.queue, key=lambda r: (-r.priority, r.ticket))

    def settle(self) -> Req | None:
        """Grant the fitting prefix; return the head that blocks (if any)."""
        for r in self.ordered():
            if not self.can_ever(r):
                continue
            if self.used() + r.weight <= self.permits:
                self.queue.remove(r)
                self.held[r.key] = (r, False)
                continue
            return r
        return None

    def self_grant(self, key: str) -> None:
        head = self.settle()
        if (
            head is not None
            and head.key == key
            and head.allow_burst
            and self.used() + head.weight <= self.permits + self.burst
        ):
            self.queue.remove(head)
            self.held[key] = (head, True)
            self.settle()


class SemaphoreMachine(RuleBasedStateMachine):
    waiting = Bundle("waiting")
    holding = Bundle("holding")

    @initialize(permits=hs.integers(1, 5), burst=hs.integers(0, 3))
    def setup(self, permits: int, burst: int) -> None:
        self.spec: dict[str, Any] = {"permits": permits, "burst": burst, "burstSeconds": 10}
        self.status: st.Status = {}
        self.model = Model(permits, burst)
        self.n = 0
        self.max_token = 0

    # -- helpers ---------------------------------------------------------------------

    def _before(self) -> tuple[dict[str, Any], list[str]]:
        return copy.deepcopy(self.status.get("holders") or {}), [
            k for k, _ in st.queue(self.status)
        ]

    def _check_step(self, before: dict[str, Any], order: list[str], pre_spec: Any) -> None:
        now = self.status["holders"]
        new = [k for k in now if k not in before]
        # Safety, at the moment of each grant.
        used = st.in_use(SEM, self.spec, self.status)
        limit = self.spec["permits"]
        if new and not any(now[k].get("burst") for k in new):
            assert used <= limit, (used, limit)
        if new:
            assert used <= limit + self.spec["burst"]
        # Fencing: every new grant has a larger token than anything issued before.
        for key in sorted(new, key=lambda k: now[k]["token"]):
            assert now[key]["token"] > self.max_token
            self.max_token = now[key]["token"]
        assert self.status["fencingToken"] == self.max_token
        # Fairness: nobody granted while a waiter ahead of it that could ever fit stayed.
        for key in new:
            if key not in order:
                continue  # granted on arrival; covered by the model comparison
            ahead = order[: order.index(key)]
            for other in ahead:
                e = self.status["waiters"].get(other)
                if e is not None and st.fits_ever(SEM, pre_spec, e):
                    raise AssertionError(f"{key} overtook {other}")

    def _compare(self) -> None:
        assert set(self.status["holders"]) == set(self.model.held)
        assert {k for k, _ in st.queue(self.status)} == {r.key for r in self.model.queue}
        for key, (_, burst) in self.model.held.items():
            assert bool(self.status["holders"][key].get("burst")) == burst

    # -- rules -----------------------------------------------------------------------

    @rule(
        target=waiting,
        weight=hs.integers(1, 6),
        priority=hs.integers(0, 3),
        preemptible=hs.booleans(),
        allow_burst=hs.booleans(),
        nowait=hs.booleans(),
    )
    def request(
        self, weight: int, priority: int, preemptible: bool, allow_burst: bool, nowait: bool
    ) -> str:
        self.n += 1
        key = f"k{self.n}"
        e = {
            "holder": key,
            "ttlSeconds": 30,
            "renewCount": 0,
            "weight": weight,
            "priority": priority,
            "preemptible": preemptible,
            **({"allowBurst": True} if allow_burst else {}),
        }
        before, order = self._before()
        req = Req(key, weight, priority, self.model.ticket, preemptible, allow_burst)
        trial = copy.deepcopy(self.status)
        try:
            st.request_in_place(SEM, self.spec, trial, key, e, now=NOW, nowait=nowait, what="m")
        except ConfigurationError:
            assert not self.model.can_ever(req)
            return key
        except WouldBlock:
            assert nowait
            m = copy.deepcopy(self.model)
            m.queue.append(req)
            m.ticket += 1
            m.self_grant(key)
            assert key not in m.held
            return key
        assert self.model.can_ever(req)
        self.status = trial
        self.model.queue.append(req)
        self.model.ticket += 1
        self.model.self_grant(key)
        self._check_step(before, order, self.spec)
        self._compare()
        return key

    @rule(key=consumes(waiting))
    def release_or_leave(self, key: str) -> None:
        before, order = self._before()
        st.release_in_place(self.status, key)
        st.settle_in_place(SEM, self.spec, self.status, now=NOW)
        self.model.held.pop(key, None)
        self.model.queue = [r for r in self.model.queue if r.key != key]
        self.model.settle()
        self._check_step(before, order, self.spec)
        self._compare()

    @rule(key=waiting)
    def renew(self, key: str) -> None:
        for name in ("holders", "waiters"):
            e = (self.status.get(name) or {}).get(key)
            if e is not None:
                e["renewCount"] += 1
        before, _order = self._before()
        st.settle_in_place(SEM, self.spec, self.status, now=NOW)
        assert set(self.status["holders"]) == set(before)

    @rule(key=waiting)
    def waiter_writes_when_told(self, key: str) -> None:
        if key not in (self.status.get("waiters") or {}):
            return
        if not st.plan(SEM, self.spec, self.status).needs_write_by(key):
            return
        before, order = self._before()
        st.self_grant_in_place(SEM, self.spec, self.status, key, now=NOW)
        self.model.self_grant(key)
        self._check_step(before, order, self.spec)
        self._compare()

    @rule(key=consumes(waiting))
    def operator_reaps(self, key: str) -> None:
        # The operator removes an expired entry, then normalizes.
        before, order = self._before()
        for name in ("holders", "waiters"):
            (self.status.get(name) or {}).pop(key, None)
        self.status = st.normalize_for(SEM)(self.spec, self.status)
        self.model.held.pop(key, None)
        self.model.queue = [r for r in self.model.queue if r.key != key]
        self.model.settle()
        self._check_step(before, order, self.spec)
        self._compare()

    @rule(permits=hs.integers(1, 6), burst=hs.integers(0, 3))
    def change_limit(self, permits: int, burst: int) -> None:
        self.spec = {**self.spec, "permits": permits, "burst": burst}
        self.model.permits, self.model.burst = permits, burst
        before, order = self._before()
        st.settle_in_place(SEM, self.spec, self.status, now=NOW)
        self.model.settle()
        self._check_step(before, order, self.spec)
        self._compare()

    @precondition(lambda self: bool(self.status))
    @invariant()
    def settled_state_is_consistent(self) -> None:
        s = self.status
        used = st.in_use(SEM, self.spec, s)
        assert s["inUse"] == used
        assert s["available"] == max(0, self.spec["permits"] - used)
        assert s["holderCount"] == len(s["holders"])
        assert s["queueLength"] == len(s["waiters"])
        # Nothing is left waiting that fits right now (no lost wake-up)...
        plan = st.plan(SEM, self.spec, s)
        assert plan.promote == ()
        # ...and normalize is idempotent on what we store.
        once = st.normalize_for(SEM)(self.spec, s)
        assert st.normalize_for(SEM)(self.spec, once) == once
        # Preemption requests only ever target lower-priority preemptible holders.
        for e in s["holders"].values():
            if e.get("preemptRequested"):
                assert e.get("preemptible")


TestSemaphoreMachine = SemaphoreMachine.TestCase
TestSemaphoreMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

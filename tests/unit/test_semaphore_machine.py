"""Hypothesis state machine: the semaphore protocol against a model of the API server.

Several processes share one Semaphore. Each plans on its own view of the object (which may
be stale) and writes the JSON patches the SDK would write for its own claims; the "server"
below applies them with the rules the CRD and the admission policy enforce, restated here
independently (limits on adding writes, slot ranges, non-overlap, the fencing counter).
Checked after every step:

* a write made on the current version is never refused (the SDK's plans are always
  acceptable: no waiter can hang on a refusal), and one made on a stale version that would
  double-book is;
* every grant was in the fitting prefix of the queue, as an independent restatement of the
  fairness rule computes it (priority, then arrival; the head blocks; never-fitting
  requests are skipped);
* fencing tokens only grow, every slot's successive grants have growing tokens;
* when every process has acted on the newest version, nothing that fits is left waiting.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines import semaphore as st
from konductor_sdk._machines import semaphore_plan as pl

SEM = st.SEMAPHORE_KIND
PROCESSES = 3


class Refused(Exception):
    pass


@attrs.define
class Claim:
    name: str
    owner: int
    rv: int
    weight: int
    priority: int
    preemptible: bool
    allow_burst: bool

    def request(self) -> pl.Request:
        return pl.Request(
            id=self.name,
            priority=self.priority,
            preemptible=self.preemptible,
            allow_burst=self.allow_burst,
            fields={"weight": self.weight, **({"allowBurst": True} if self.allow_burst else {})},
        )


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 for the paths the SDK uses; raises Refused on a failed test/missing path."""
    out = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = out
        for p in parts[:-1]:
            if not isinstance(parent, dict) or p not in parent:
                raise Refused(f"no {op['path']}")
            parent = parent[p]
        last = parts[-1]
        if op["op"] == "test":
            if parent.get(last) != op["value"]:
                raise Refused(f"test {op['path']}")
        elif op["op"] == "add":
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            if last not in parent:
                raise Refused(f"remove {op['path']}")
            del parent[last]
        else:
            raise AssertionError(op)
    return out


class Server:
    """One object and the server-side rules of crds/semaphore.yaml + policies/semaphore.yaml."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.doc: dict[str, Any] = {"metadata": {"resourceVersion": "1"}, "spec": spec}
        self.rv = 1

    def obj(self) -> KObject:
        return KObject(copy.deepcopy(self.doc))

    def write(self, ops: list[dict[str, Any]], *, operator: bool = False) -> None:
        new = apply_patch(self.doc, ops)
        old_s = self.doc.get("status") or {}
        new_s = new.get("status") or {}
        old_h, new_h = old_s.get("holders") or {}, new_s.get("holders") or {}
        added = [k for k in new_h if k not in old_h]
        spec = new["spec"]
        permits, burst = spec["permits"], spec.get("burst", 0)
        old_ft, new_ft = old_s.get("fencingToken", 0), new_s.get("fencingToken", 0)
        if ("fencingToken" in old_s and "fencingToken" not in new_s) or new_ft < old_ft:
            raise Refused("fencing token went down")
        if new_ft - old_ft != len(added):
            raise Refused("fencing token must grow by one per new grant")
        for k in old_h:
            if k in new_h and new_h[k]["token"] != old_h[k]["token"]:
                raise Refused("a grant never changes")
        if added:
            if sum(e["weight"] for e in new_h.values() if not e.get("burst")) > permits:
                raise Refused("limit")
            if sum(e["weight"] for e in new_h.values()) > permits + burst:
                raise Refused("limit with burst")
        for k in added:
            e = new_h[k]
            if not old_ft < e["token"] <= new_ft:
                raise Refused("token range")
            if int(k) + e["weight"] > permits + burst:
                raise Refused("slot range")
            if e.get("burst") and not (0 < e.get("ttlSeconds", 0) <= spec["burstSeconds"]):
                raise Refused("burst ttl")
            for j, f in new_h.items():
                if j != k and int(j) < int(k) + e["weight"] and int(k) < int(j) + f["weight"]:
                    raise Refused("overlap")
        if not operator:
            tokens = [new_h[k]["token"] for k in added]
            if len(set(tokens)) != len(tokens):
                raise Refused("distinct tokens")
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.doc = new


def model_prefix(spec: dict[str, Any], status: dict[str, Any], queue: list[Claim]) -> list[str]:
    """The fairness rule restated over a list of booleans: which claims (in order) fit now."""
    permits, burst = spec["permits"], spec.get("burst", 0)
    size = permits + burst
    taken = [False] * size
    regular = total = 0
    for k, e in (status.get("holders") or {}).items():
        for s in range(int(k), int(k) + e["weight"]):
            if s < size:
                taken[s] = True
        total += e["weight"]
        regular += 0 if e.get("burst") else e["weight"]

    def best_fit(w: int) -> int | None:
        runs, start = [], None
        for i in range(size + 1):
            free = i < size and not taken[i]
            if free and start is None:
                start = i
            if not free and start is not None:
                runs.append((i - start, start))
                start = None
        fits = sorted(r for r in runs if r[0] >= w)
        return fits[0][1] if fits else None

    out = []
    for c in sorted(queue, key=lambda c: (-c.priority, c.rv)):
        if c.weight > permits and not (c.allow_burst and c.weight <= size):
            continue
        slot = None
        is_burst = False
        if regular + c.weight <= permits and total + c.weight <= size:
            slot = best_fit(c.weight)
        if slot is None and c.allow_burst and total + c.weight <= size:
            slot, is_burst = best_fit(c.weight), True
        if slot is None:
            break
        for s in range(slot, slot + c.weight):
            taken[s] = True
        total += c.weight
        regular += 0 if is_burst else c.weight
        out.append(c.name)
    return out


class SemaphoreProtocol(RuleBasedStateMachine):
    @initialize(permits=hs.integers(1, 5), burst=hs.integers(0, 2))
    def setup(self, permits: int, burst: int) -> None:
        self.server = Server({"permits": permits, "burst": burst, "burstSeconds": 10})
        self.views = [self.server.obj() for _ in range(PROCESSES)]
        self.queue: list[Claim] = []
        self.granted: dict[str, Claim] = {}
        self.n = 0
        self.slot_tokens: dict[int, int] = {}

    # -- helpers ---------------------------------------------------------------------

    def _waiting(self) -> list[Claim]:
        return [c for c in self.queue if c.name not in self.granted]

    def _plan(self, view: KObject, owner: int) -> pl.Plan:
        held_claims = {g.claim for g in st.grants(view.status) if g.claim}
        order = sorted(self.queue, key=lambda c: (-c.priority, c.rv))
        mine = {c.name for c in self.queue if c.owner == owner}
        return pl.plan(
            SEM,
            view.spec,
            view.status,
            (c.request() for c in order if c.name not in held_claims),
            preempt_for=mine.__contains__,
        )

    def _write_as(self, owner: int) -> bool:
        """The owner's coordinator step on its view; True if it wrote something."""
        view = self.views[owner]
        plan = self._plan(view, owner)
        mine = [p for p in plan.grants if self._claim(p.request).owner == owner]
        if not mine:
            return False
        fresh = view.resource_version == self.server.obj().resource_version
        if fresh:
            expected = model_prefix(dict(view.spec), dict(view.status), self._waiting())
            assert [p.request for p in plan.grants] == expected
        entries = []
        for p in mine:
            e: dict[str, Any] = {
                "weight": p.weight,
                "session": f"s{owner}",
                "creator": "u",
                "holder": f"p{owner}",
                "claim": p.request,
            }
            if p.burst:
                e.update(burst=True, ttlSeconds=5, renewCount=0)
            entries.append((p.slot, e))
        ops, tokens = pl.grant_patch(view, entries)
        try:
            self.server.write(ops)
        except Refused:
            assert not fresh, "a write on the current version was refused"
            return False
        for p, token in zip(mine, tokens, strict=True):
            self.granted[p.request] = self._claim(p.request)
            for s in range(p.slot, p.slot + p.weight):
                assert token > self.slot_tokens.get(s, 0)
                self.slot_tokens[s] = token
        self.views[owner] = self.server.obj()
        return True

    def _claim(self, name: str) -> Claim:
        return next(c for c in self.queue if c.name == name)

    # -- rules -----------------------------------------------------------------------

    @rule(
        owner=hs.integers(0, PROCESSES - 1),
        weight=hs.integers(1, 4),
        priority=hs.integers(0, 2),
        preemptible=hs.booleans(),
        allow_burst=hs.booleans(),
    )
    def enqueue(
        self, owner: int, weight: int, priority: int, preemptible: bool, allow_burst: bool
    ) -> None:
        self.n += 1
        self.queue.append(
            Claim(f"c{self.n}", owner, self.n, weight, priority, preemptible, allow_burst)
        )

    @rule(owner=hs.integers(0, PROCESSES - 1))
    def refresh(self, owner: int) -> None:
        self.views[owner] = self.server.obj()

    @rule(owner=hs.integers(0, PROCESSES - 1))
    def write(self, owner: int) -> None:
        self._write_as(owner)

    @rule(data=hs.data())
    def release(self, data: hs.DataObject) -> None:
        holders = self.server.obj().status.get("holders") or {}
        if not holders:
            return
        slot = data.draw(hs.sampled_from(sorted(holders)))
        self.server.write(pl.release_patch(int(slot), holders[slot]["token"]))
        self.queue = [c for c in self.queue if c.name != holders[slot].get("claim")]

    @rule(data=hs.data())
    def leave_the_queue(self, data: hs.DataObject) -> None:
        waiting = self._waiting()
        if waiting:
            gone = data.draw(hs.sampled_from(waiting))
            self.queue.remove(gone)

    @rule(data=hs.data())
    def ask_and_yield(self, data: hs.DataObject) -> None:
        """A head asks for preemption; every holder asked yields at once."""
        owner = data.draw(hs.integers(0, PROCESSES - 1))
        obj = self.server.obj()
        plan = self._plan(obj, owner)
        if plan.head is None or not plan.preempt:
            return
        head = self._claim(plan.head)
        held = {g.token: g for g in st.grants(obj.status)}
        for token in plan.preempt:
            g = held[token]
            assert g.preemptible
            assert g.priority < head.priority
        request = {"creator": "u", "session": f"s{owner}", "claim": head.name}
        self.server.write(pl.request_patch(obj.status, dict.fromkeys(plan.preempt, request)))
        for token in plan.preempt:
            g = held[token]
            self.server.write(pl.release_patch(g.slot, g.token))
            self.queue = [c for c in self.queue if c.name != g.claim]

    @rule(permits=hs.integers(1, 5), burst=hs.integers(0, 2))
    def change_limit(self, permits: int, burst: int) -> None:
        self.server.doc["spec"] = {**self.server.doc["spec"], "permits": permits, "burst": burst}
        self.server.rv += 1  # a spec change is a new version too
        self.server.doc["metadata"]["resourceVersion"] = str(self.server.rv)

    @rule()
    def everyone_catches_up(self) -> None:
        """Every process acts on the newest version until nobody has anything to write:
        then nothing that fits is left waiting (no lost wake-up)."""
        for _ in range(50):
            wrote = False
            for owner in range(PROCESSES):
                self.views[owner] = self.server.obj()
                wrote = self._write_as(owner) or wrote
            if not wrote:
                break
        obj = self.server.obj()
        assert self._plan(obj, -1).grants == ()

    @invariant()
    def server_state_is_consistent(self) -> None:
        status = self.server.obj().status
        held = st.grants(status)
        assert len(held) == len(status.get("holders") or {})
        assert st.fencing_token(status) >= max((g.token for g in held), default=0)
        for a in held:
            for b in held:
                assert a is b or a.end <= b.slot or b.end <= a.slot


TestSemaphoreProtocol = SemaphoreProtocol.TestCase
TestSemaphoreProtocol.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

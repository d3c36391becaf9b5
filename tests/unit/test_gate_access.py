"""The operator's reading of referenced objects (pure) and its access decisions."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from konductor_operator._gate_refs import (
    POLICY_NAME,
    VAP,
    VAP_BINDING,
    AccessGuard,
    Target,
    judge,
)
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.objects import GATE, JOB, LEASE, SEMAPHORE, KObject, ResourceKind
from konductor_sdk._machines.gate_spec import parse_spec

pytestmark = pytest.mark.anyio


def leaf(kind: str, **params: Any) -> Any:
    return parse_spec({"conditions": [{"name": "c", kind: {"name": "x", **params}}]}).leaves[0]


def obj(spec: Any = None, status: Any = None) -> KObject:
    return KObject(
        {"metadata": {"name": "x", "namespace": "n"}, "spec": spec or {}, "status": status or {}}
    )


def job(*true: str) -> KObject:
    return obj(
        status={
            "conditions": [{"type": t, "status": "True"} for t in true]
            + [{"type": "Suspended", "status": "False"}]
        }
    )


def test_job() -> None:
    t = Target(JOB, "n", "x")
    assert judge(leaf("job"), t, None).message == "Job n/x not found"
    assert not judge(leaf("job"), t, job()).met
    assert judge(leaf("job"), t, job("SuccessCriteriaMet", "Complete")).met
    failed = judge(leaf("job"), t, job("FailureTarget", "Failed"))
    assert (failed.met, failed.failed) == (False, True)
    assert judge(leaf("job", state="Failed"), t, job("Failed")).met
    assert judge(leaf("job", state="Failed"), t, job("Complete")).failed


def test_semaphore_lease_gate() -> None:
    sem = judge(
        leaf("semaphore", minAvailable=2),
        Target(SEMAPHORE, "n", "x"),
        obj({"permits": 3}, {"holders": {}}),
    )
    assert sem.met
    assert "3 available (need 2)" in sem.message
    assert not judge(
        leaf("semaphore", minAvailable=4), Target(SEMAPHORE, "n", "x"), obj({"permits": 3})
    ).met
    held = obj({}, {"holders": {"k": {"holder": "h1", "token": 1}}, "fencingToken": 1})
    assert judge(leaf("lease"), Target(LEASE, "n", "x"), held).met
    assert not judge(leaf("lease", state="Free"), Target(LEASE, "n", "x"), held).met
    assert judge(leaf("lease", state="Free"), Target(LEASE, "n", "x"), obj()).met
    spec = {"conditions": [{"name": "a", "external": {}}]}
    waiting = judge(leaf("gate"), Target(GATE, "n", "x"), obj(spec))
    assert not waiting.met
    assert not waiting.failed
    bad = judge(leaf("gate"), Target(GATE, "n", "x"), obj({"conditions": []}))
    assert bad.failed  # an invalid spec fails the referenced gate, so ours can never open


class FakeStore:
    """Just what AccessGuard uses: get/create of policies and SubjectAccessReviews."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.objects: dict[str, dict[str, Any]] = {}
        self.stats: Counter[str] = Counter()
        self.reviews: list[dict[str, Any]] = []

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        if kind.plural not in self.objects:
            raise NotFoundError("nope", status=404)
        return KObject(self.objects[kind.plural])

    async def create(self, kind: ResourceKind, namespace: str | None, body: Any) -> KObject:
        if kind.plural == "subjectaccessreviews":
            self.reviews.append(body["spec"])
            ok = body["spec"]["user"] in self.allowed
            return KObject({"status": {"allowed": ok, "reason": "RBAC"}})
        self.objects[kind.plural] = dict(body)
        return KObject(body)


def gate(namespace: str, creator: Any = None) -> KObject:
    spec: dict[str, Any] = {"conditions": []}
    if creator is not None:
        spec["creator"] = creator
    return KObject({"metadata": {"name": "g", "namespace": namespace}, "spec": spec})


async def test_access_without_a_verified_creator() -> None:
    store = FakeStore(allowed={"alice"})
    guard = AccessGuard(store, FakeClock())  # type: ignore[arg-type]
    here, there = Target(JOB, "a", "j"), Target(JOB, "b", "j")
    # No policy: a recorded creator is not trusted; only the gate's namespace is visible.
    assert await guard.ensure_policy(install=False) is False
    alice = {"username": "alice", "groups": ["g"]}
    assert await guard.denied(gate("a", alice), here) is None
    refused = await guard.denied(gate("a", alice), there)
    assert refused is not None
    assert "no verified spec.creator" in refused
    assert store.reviews == []


async def test_access_with_policy_uses_subject_access_reviews() -> None:
    store = FakeStore(allowed={"alice"})
    clock = FakeClock()
    guard = AccessGuard(store, clock)  # type: ignore[arg-type]
    assert await guard.ensure_policy(install=True)
    assert {VAP.plural, VAP_BINDING.plural} <= set(store.objects)
    assert store.objects[VAP.plural]["metadata"]["name"] == POLICY_NAME
    there = Target(JOB, "b", "j")
    assert await guard.denied(gate("a", {"username": "alice", "groups": ["g"]}), there) is None
    assert store.reviews[-1] == {
        "user": "alice",
        "groups": ["g"],
        "resourceAttributes": {
            "verb": "get",
            "group": "batch",
            "resource": "jobs",
            "name": "j",
            "namespace": "b",
        },
    }
    bob = await guard.denied(gate("a", {"username": "bob"}), there)
    assert bob is not None
    assert "bob may not get it" in bob
    # Same-namespace references are checked too once the creator is verified.
    assert await guard.denied(gate("b", {"username": "bob"}), there) is not None
    n = len(store.reviews)
    await guard.denied(gate("a", {"username": "bob"}), there)
    assert len(store.reviews) == n  # cached...
    clock.advance(31)
    await guard.denied(gate("a", {"username": "bob"}), there)
    assert len(store.reviews) == n + 1  # ...for a while only


def test_barrier_once_waitgroup() -> None:
    from konductor_sdk._kernel.objects import BARRIER, ONCE, WAITGROUP

    b = Target(BARRIER, "n", "x")
    open_ = obj({"expected": 2}, {"generation": 3, "phase": "Open"})
    assert judge(leaf("barrier"), b, open_).met
    assert not judge(leaf("barrier", state="Failed"), b, open_).met
    failed = judge(leaf("barrier"), b, obj({"expected": 2}, {"generation": 3, "phase": "Failed"}))
    assert (failed.met, failed.failed) == (False, False)  # a barrier re-arms: not impossible
    o = Target(ONCE, "n", "x")
    assert judge(leaf("once"), o, obj({}, {"phase": "Done"})).met
    assert not judge(leaf("once"), o, obj({}, {"phase": "Failed"})).failed
    w = Target(WAITGROUP, "n", "x")
    assert judge(leaf("waitGroup"), w, obj({}, {"counter": 0})).met
    assert "counter 2" in judge(leaf("waitGroup"), w, obj({}, {"counter": 2})).message

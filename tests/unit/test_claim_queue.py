"""The claim queue keeps its claims in their queued form, and in service order."""

from __future__ import annotations

from typing import Any

from konductor_sdk._kernel.claims import ClaimQueue, order_key
from konductor_sdk._kernel.objects import CLAIM, KObject
from konductor_sdk._kernel.watch import KindWatch

NS = "ns"


def claim(name: str, rv: int, *, priority: int = 0, deleting: bool = False) -> KObject:
    """A claim as the API server sends it (managedFields are dropped by the store)."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "resourceVersion": str(rv),
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"sync.konductor.io/session": "s-1"},
        "annotations": {"sync.konductor.io/creator": "alice"},
        "ownerReferences": [
            {"apiVersion": "sync.konductor.io/v1alpha1", "kind": "Session", "name": "s-1"}
        ],
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:01Z"
    return KObject(
        {
            "apiVersion": "sync.konductor.io/v1alpha1",
            "kind": "Claim",
            "metadata": metadata,
            "spec": {
                "target": {"kind": "Semaphore", "name": "sem"},
                "session": "s-1",
                "holder": "pod-a",
                "pod": {"name": "pod-a", "namespace": NS, "uid": "p"},
                "weight": 2,
                "mode": "write",
                "priority": priority,
                "preemptible": True,
                "allowBurst": True,
                "ttlSeconds": 9,
            },
        }
    )


def test_a_queued_claim_keeps_what_the_sdk_reads_and_nothing_else() -> None:
    watch = KindWatch(None, CLAIM, NS)  # type: ignore[arg-type]
    queue = ClaimQueue(watch)
    full = claim("a", 7, priority=3)
    expected_key = order_key(full)
    expected_spec = {k: v for k, v in full.spec.items() if k != "target"}
    watch._apply("ADDED", full)

    queued = queue.get("a")
    assert queued is not None
    assert watch.get("a", NS) is queued  # the watch's cache holds the same, reduced, object
    assert dict(queued.raw) == {
        "metadata": {"name": "a", "namespace": NS, "uid": "uid-a", "resourceVersion": "7"},
        "spec": expected_spec,
    }
    assert (queued.name, queued.namespace, queued.uid) == ("a", NS, "uid-a")
    assert order_key(queued) == expected_key
    assert not queued.deleting


def test_the_order_is_priority_then_creation_and_a_deleting_claim_leaves_it() -> None:
    watch = KindWatch(None, CLAIM, NS)  # type: ignore[arg-type]
    queue = ClaimQueue(watch)
    for obj in (claim("late", 9), claim("early", 5), claim("urgent", 12, priority=1)):
        watch._apply("ADDED", obj)
    assert [c.name for c in queue.ordered()] == ["urgent", "early", "late"]

    watch._apply("MODIFIED", claim("early", 13, deleting=True))
    assert [c.name for c in queue.ordered()] == ["urgent", "late"]
    cached = watch.get("early", NS)
    assert cached is not None
    assert cached.deleting
    watch._apply("DELETED", claim("early", 14, deleting=True))
    assert watch.get("early", NS) is None
    assert len(queue) == 2


def test_claims_cached_before_the_queue_existed_are_reduced_too() -> None:
    watch = KindWatch(None, CLAIM, NS)  # type: ignore[arg-type]
    watch._apply("ADDED", claim("a", 3))
    queue = ClaimQueue(watch)
    queued = queue.get("a")
    assert queued is not None
    assert set(queued.raw) == {"metadata", "spec"}
    assert "labels" not in queued.metadata
    assert "target" not in queued.spec

"""The Semaphore, Mutex and RWMutex CRDs on the real server: names, columns, and schema
validation that rejects bad objects with a message naming the field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from konductor_sdk import Client, InvalidObjectError
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, SEMAPHORE, ResourceKind

pytestmark = pytest.mark.anyio

CRD = ResourceKind(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)


def entry(**extra: Any) -> dict[str, Any]:
    return {"holder": "h", "ttlSeconds": 30, "renewCount": 0, **extra}


@pytest.mark.parametrize(
    ("plural", "short", "columns"),
    [
        ("semaphores", ["sem"], ["In-Use", "Limit", "Waiting", "Phase", "Token", "Age"]),
        ("mutexes", ["mtx"], ["Phase", "Holder", "Waiting", "Token", "Age"]),
        ("rwmutexes", ["rwm"], ["Phase", "Readers", "Writer", "Waiting", "Age"]),
    ],
)
async def test_names_and_printer_columns(
    client: Client, plural: str, short: list[str], columns: list[str]
) -> None:
    crd = await client.store.get(CRD, None, f"{plural}.sync.konductor.io")
    names = crd.spec["names"]
    assert names["shortNames"] == short
    assert names["categories"] == ["konductor"]
    (version,) = crd.spec["versions"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    assert version["subresources"] == {"status": {}}
    established = {c["type"]: c["status"] for c in crd.status["conditions"]}
    assert established["Established"] == "True"


SPEC_CASES = [
    (SEMAPHORE, {"permits": 0}, "spec.permits"),
    (SEMAPHORE, {"permits": -3}, "spec.permits"),
    (SEMAPHORE, {"permits": 1_000_001}, "spec.permits"),
    (SEMAPHORE, {}, "spec.permits: Required value"),
    (SEMAPHORE, {"permits": "four"}, "spec.permits"),
    (SEMAPHORE, {"permits": 2, "burst": -1}, "spec.burst"),
    (SEMAPHORE, {"permits": 2, "burstSeconds": 0}, "spec.burstSeconds"),
    (SEMAPHORE, {"permits": 2, "burstSeconds": 86_401}, "spec.burstSeconds"),
    (RWMUTEX, {"maxReaders": 0}, "spec.maxReaders"),
    (RWMUTEX, {"maxReaders": 4096}, "spec.maxReaders"),
]


@pytest.mark.parametrize(("kind", "spec", "field"), SPEC_CASES)
async def test_invalid_spec_is_rejected_naming_the_field(
    client: Client, kind: ResourceKind, spec: dict[str, Any], field: str
) -> None:
    body = {"metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(InvalidObjectError, match=re.escape(field)):
        await client.store.create(kind, client.namespace, body)


VALID_SPEC = {SEMAPHORE.kind: {"permits": 2}, MUTEX.kind: {}, RWMUTEX.kind: {}}
STATUS_CASES = [
    (
        SEMAPHORE,
        {"holders": {"k": entry(weight=0, token=1)}},
        "status.holders.k.weight: Invalid value: 0",
    ),
    (SEMAPHORE, {"holders": {"k": entry(weight=1)}}, "status.holders.k.token: Required value"),
    (
        SEMAPHORE,
        {"holders": {"k": entry(weight=1, token=1, ttlSeconds=0)}},
        "status.holders[k].ttlSeconds: Invalid value: ttlSeconds: 0 "
        "(held until released or the pod ends) requires a pod reference",
    ),
    (
        SEMAPHORE,
        {"holders": {"k": entry(weight=1, token=1, ttlSeconds=90_000)}},
        "status.holders.k.ttlSeconds",
    ),
    (
        SEMAPHORE,
        {"holders": {"k": entry(weight=1, token=1, priority=10**7)}},
        "status.holders.k.priority",
    ),
    (SEMAPHORE, {"waiters": {"k": entry(weight=1)}}, "status.waiters.k.ticket: Required value"),
    (
        SEMAPHORE,
        {"waiters": {"k": entry(weight=1, ticket=0, pod={})}},
        "status.waiters.k.pod.name: Required value",
    ),
    (SEMAPHORE, {"phase": "Bogus"}, "status.phase"),
    (
        SEMAPHORE,
        {"holders": {f"k{i}": entry(weight=1, token=i + 1) for i in range(2049)}},
        "status.holders: Too many",
    ),
    (MUTEX, {"holders": {"k": entry(weight=1)}}, "status.holders.k.token: Required value"),
    (MUTEX, {"phase": "Full"}, "status.phase"),
    (
        MUTEX,
        {"holders": {"k": entry(weight=1, token=0)}},
        "status.holders.k.token: Invalid value: 0",
    ),
    (
        RWMUTEX,
        {"holders": {"k": entry(token=1, mode="exclusive")}},
        "status.holders.k.mode: Unsupported value",
    ),
    (RWMUTEX, {"holders": {"k": entry(token=1)}}, "status.holders.k.mode: Required value"),
    (RWMUTEX, {"readers": -1}, "status.readers"),
]


@pytest.mark.parametrize(("kind", "status", "field"), STATUS_CASES)
async def test_invalid_status_is_rejected_naming_the_field(
    client: Client, kind: ResourceKind, status: dict[str, Any], field: str
) -> None:
    body = {"metadata": {"name": "obj"}, "spec": VALID_SPEC[kind.kind]}
    created = await client.store.create(kind, client.namespace, body)
    with pytest.raises(InvalidObjectError, match=re.escape(field)):
        await client.store.replace(kind, created.with_status(status), subresource="status")
    # A valid status of the same shape goes through, so the schema is not simply closed.
    ok = {
        "holders": {"k": entry(token=1, **({"mode": "read"} if kind is RWMUTEX else {"weight": 1}))}
    }
    await client.store.replace(kind, created.with_status(ok), subresource="status")


async def test_pod_bound_entry_is_accepted(client: Client) -> None:
    created = await client.store.create(
        SEMAPHORE, client.namespace, {"metadata": {"name": "pod"}, "spec": {"permits": 1}}
    )
    pod = {"name": "trainer-0", "namespace": client.namespace, "uid": "u"}
    st = {"holders": {"k": entry(weight=1, token=1, ttlSeconds=0, pod=pod)}}
    written = await client.store.replace(SEMAPHORE, created.with_status(st), subresource="status")
    assert written.status["holders"]["k"]["pod"] == pod
    assert written.spec == {"permits": 1, "burst": 0, "burstSeconds": 60}  # defaults applied

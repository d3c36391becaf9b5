"""The Semaphore, Mutex and RWMutex CRDs and their admission policy on the real server:
names, columns, spec validation, and the status invariants the server enforces whoever
writes (limits, slot ranges, non-overlap, the fencing counter, immutable grants), each
refused with a message naming the rule. Who may write which entry is
test_semaphore_ownership.py."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest

from konductor_sdk import APIError, Client, InvalidObjectError
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, SEMAPHORE, ResourceKind
from konductor_sdk._machines.semaphore import MAX_HOLDERS
from konductor_sdk.semaphore import Semaphore
from tests.integration._semaphore_helpers import holders, until, until_queued

pytestmark = pytest.mark.anyio

CRD = ResourceKind(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)


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
    (RWMUTEX, {"maxReaders": 4097}, "spec.maxReaders"),
]


@pytest.mark.parametrize(("kind", "spec", "field"), SPEC_CASES)
async def test_invalid_spec_is_rejected_naming_the_field(
    client: Client, kind: ResourceKind, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidObjectError, match=re.escape(field)):
        await client.store.create(kind, client.namespace, {"metadata": {"name": "x"}, "spec": spec})


def grant(token: int, weight: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "weight": weight,
        "token": token,
        "session": "s",
        "creator": "konductor-admin",
        "holder": "h",
        **extra,
    }


def add(slot: int, entry: dict[str, Any]) -> dict[str, Any]:
    return {"op": "add", "path": f"/status/holders/{slot}", "value": entry}


def counter(old: int, new: int) -> list[dict[str, Any]]:
    return [{"op": "test", "path": "/status/fencingToken", "value": old}]


def new_token(value: int) -> dict[str, Any]:
    return {"op": "add", "path": "/status/fencingToken", "value": value}


def granting(slot: int | str, entry: dict[str, Any], token: int) -> list[dict[str, Any]]:
    """A grant on the base state (fencingToken 2), the way the SDK writes one."""
    return [
        {"op": "test", "path": "/status/fencingToken", "value": 2},
        {"op": "add", "path": f"/status/holders/{slot}", "value": entry},
        new_token(token),
    ]


BURST = {"burst": True, "ttlSeconds": 5, "renewCount": 0}

# Against a Semaphore with permits 3, burst 1, burstSeconds 10 holding "0" (w1, token 1)
# and "1" (w2, token 2, yielding: ttlSeconds 30): every write here is refused, whoever
# sends it (these run as the admin, who may override ownership).
REFUSED: list[tuple[str, list[dict[str, Any]], str]] = [
    ("over the limit", granting(3, grant(3), 3), "exceed the limit"),
    ("burst without a ttl", granting(3, grant(3, burst=True), 3), "burst grant must"),
    (
        "burst longer than burstSeconds",
        granting(3, grant(3, burst=True, ttlSeconds=11, renewCount=0), 3),
        "burst grant must",
    ),
    ("beyond the last slot", granting(4, grant(3, **BURST), 3), "within slots"),
    ("overlapping a wide grant", granting(2, grant(3, **BURST), 3), "overlap"),
    ("a grant replaced in place", granting(0, grant(3), 3), "never changes"),
    ("a key with a leading zero", granting("03", grant(3, **BURST), 3), "first slot"),
    ("a grant skipping tokens", granting(3, grant(5, **BURST), 5), "exactly one per new grant"),
    ("a token reused", granting(3, grant(2, **BURST), 3), "token above"),
    ("the counter jumping", [new_token(2**62)], "exactly one per new grant"),
    ("the counter lowered", [new_token(1)], "never goes down"),
    ("the counter removed", [{"op": "remove", "path": "/status/fencingToken"}], "never goes down"),
    (
        "a token changed",
        [{"op": "add", "path": "/status/holders/0/token", "value": 9}],
        "never changes",
    ),
    (
        "a weight changed",
        [{"op": "add", "path": "/status/holders/0/weight", "value": 3}],
        "never changes",
    ),
    (
        "a grant's ttl changed",
        [{"op": "add", "path": "/status/holders/1/ttlSeconds", "value": 31}],
        "never changes",
    ),
    (
        "a grant's ttl removed",
        [{"op": "remove", "path": "/status/holders/1/ttlSeconds"}],
        "never changes",
    ),
]


async def _base(client: Client, name: str) -> None:
    await client.store.create(
        SEMAPHORE,
        client.namespace,
        {"metadata": {"name": name}, "spec": {"permits": 3, "burst": 1, "burstSeconds": 10}},
    )
    obj = await client.store.get(SEMAPHORE, client.namespace, name)
    first = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version},
        {
            "op": "add",
            "path": "/status",
            "value": {
                "fencingToken": 2,
                "holders": {"0": grant(1), "1": grant(2, 2, ttlSeconds=30, renewCount=0)},
            },
        },
    ]
    await status_patch(client, name, first)


async def status_patch(
    client: Client, name: str, ops: list[dict[str, Any]], kind: ResourceKind = SEMAPHORE
) -> Any:
    return await client.store.patch(
        kind, client.namespace, name, ops, patch_type="json", subresource="status"
    )


@pytest.mark.parametrize(("label", "ops", "message"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_status_invariants_hold_whoever_writes(
    client: Client, label: str, ops: list[dict[str, Any]], message: str
) -> None:
    await _base(client, "sem")
    before = await client.store.get(SEMAPHORE, client.namespace, "sem")
    with pytest.raises(APIError, match=re.escape(message)) as info:
        await status_patch(client, "sem", ops)
    assert info.value.status in (403, 422), label
    after = await client.store.get(SEMAPHORE, client.namespace, "sem")
    assert after.resource_version == before.resource_version


async def test_what_is_allowed_stays_allowed(client: Client) -> None:
    await _base(client, "ok")
    # A burst grant within the rules; a holder yielding (adds a ttl); releases.
    burst = grant(3, burst=True, ttlSeconds=10, renewCount=0)
    await status_patch(client, "ok", granting(3, burst, 3))
    await status_patch(
        client,
        "ok",
        [
            {"op": "add", "path": "/status/holders/0/ttlSeconds", "value": 30},
            {"op": "add", "path": "/status/holders/0/renewCount", "value": 0},
        ],
    )
    # Lowering the limit below what is held never blocks a release...
    await client.store.patch(SEMAPHORE, client.namespace, "ok", {"spec": {"permits": 1}})
    await status_patch(client, "ok", [{"op": "remove", "path": "/status/holders/3"}])
    # ...but a new grant must fit the new limit.
    with pytest.raises(InvalidObjectError, match="exceed the limit"):
        await status_patch(client, "ok", [*counter(3, 4), add(3, grant(4)), new_token(4)])
    await status_patch(client, "ok", [{"op": "remove", "path": "/status/holders/1"}])
    await status_patch(client, "ok", [{"op": "remove", "path": "/status/holders/0"}])
    await status_patch(client, "ok", [*counter(3, 4), add(0, grant(4)), new_token(4)])


async def test_a_mutex_has_one_holder_and_an_rwmutex_writer_is_alone(client: Client) -> None:
    for kind, spec in ((MUTEX, {}), (RWMUTEX, {"maxReaders": 2})):
        await client.store.create(kind, client.namespace, {"metadata": {"name": "l"}, "spec": spec})
    mode: dict[str, Any] = {"mode": "read"}
    await status_patch(
        client,
        "l",
        [
            {
                "op": "add",
                "path": "/status",
                "value": {"fencingToken": 1, "holders": {"0": grant(1)}},
            }
        ],
        MUTEX,
    )
    with pytest.raises(InvalidObjectError):
        await status_patch(client, "l", [*counter(1, 2), add(1, grant(2)), new_token(2)], MUTEX)
    with pytest.raises(InvalidObjectError, match="weight"):
        await status_patch(client, "l", [add(0, grant(1, 2))], MUTEX)
    await status_patch(
        client,
        "l",
        [
            {
                "op": "add",
                "path": "/status",
                "value": {"fencingToken": 1, "holders": {"0": grant(1, **mode)}},
            }
        ],
        RWMUTEX,
    )
    await status_patch(
        client, "l", [*counter(1, 2), add(1, grant(2, **mode)), new_token(2)], RWMUTEX
    )
    cases = [
        ("a writer beside readers", [add(1, grant(3, 2, mode="write"))]),
        ("a reader of two slots", [add(2, grant(3, 2, **mode))]),
    ]
    await status_patch(client, "l", [{"op": "remove", "path": "/status/holders/1"}], RWMUTEX)
    for label, ops in cases:
        with pytest.raises(InvalidObjectError):
            await status_patch(client, "l", [*counter(2, 3), *ops, new_token(3)], RWMUTEX)
        assert label
    await status_patch(client, "l", [{"op": "remove", "path": "/status/holders/0"}], RWMUTEX)
    with pytest.raises(InvalidObjectError, match="new writer all of them"):
        await status_patch(
            client, "l", [*counter(2, 3), add(0, grant(3, 1, mode="write")), new_token(3)], RWMUTEX
        )
    await status_patch(
        client, "l", [*counter(2, 3), add(0, grant(3, 2, mode="write")), new_token(3)], RWMUTEX
    )


async def test_the_holder_cap_is_a_wait_not_an_error(client: Client, make_client: Any) -> None:
    """4,096 grants at once is the documented limit on concurrent holders: the server
    refuses a 4,097th, and a waiter that would exceed it simply waits its turn."""
    name = "full"
    sem = Semaphore(name, permits=MAX_HOLDERS + 10, client=client)
    await sem.create()
    obj = await client.store.get(SEMAPHORE, client.namespace, name)
    full = {str(i): grant(i + 1) for i in range(MAX_HOLDERS)}
    await status_patch(
        client,
        name,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version},
            {
                "op": "add",
                "path": "/status",
                "value": {"fencingToken": MAX_HOLDERS, "holders": full},
            },
        ],
    )
    with pytest.raises(InvalidObjectError, match="Too many"):
        await status_patch(
            client,
            name,
            [
                *counter(MAX_HOLDERS, 0),
                add(MAX_HOLDERS, grant(MAX_HOLDERS + 1)),
                new_token(MAX_HOLDERS + 1),
            ],
        )
    got: list[int] = []

    async def wait() -> None:
        p = await Semaphore(name, client=make_client("late")).acquire()
        got.append(p.slot)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await until_queued(client, name, lambda c: len(c) == 1, seconds=120)
        await status_patch(client, name, [{"op": "remove", "path": "/status/holders/7"}])
    assert got == [7]
    final = await until(client, name, lambda o: len(holders(o)) == MAX_HOLDERS, seconds=120)
    assert final.status["fencingToken"] == MAX_HOLDERS + 1

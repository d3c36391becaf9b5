"""The public surface without a server: argument checks, reprs, statistics, and the
group-commit writer against an in-memory store."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from konductor_sdk import Client, ConfigurationError, ConflictError, Identity, NotFoundError
from konductor_sdk._engines.semaphore_commit import committer
from konductor_sdk._kernel.objects import KObject, ResourceKind
from konductor_sdk._machines import semaphore as st
from konductor_sdk.mutex import Mutex
from konductor_sdk.rwmutex import RWMutex
from konductor_sdk.semaphore import Semaphore
from konductor_sdk.sync import semaphore as sync


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Semaphore("x", permits=0), "permits"),
        (lambda: Semaphore("x", permits=2.5), "permits"),  # type: ignore[arg-type]
        (lambda: Semaphore("x", burst=-1), "burst"),
        (lambda: Semaphore("x", burst_seconds=86_401), "burst_seconds"),
        (lambda: Semaphore("x", ttl=0.5), "ttl"),  # type: ignore[arg-type]
        (lambda: Semaphore("x", ttl=True), "ttl"),
        (lambda: Semaphore("UPPER"), "name"),
        (lambda: Semaphore("x", namespace="a" * 64), "namespace"),
        (lambda: Semaphore("x").hold(weight=0), "weight"),
        (lambda: Semaphore("x").hold(priority=2_000_000), "priority"),
        (lambda: Semaphore("x").hold(ttl=-1), "ttl"),
        (lambda: Mutex("x", ttl=100_000), "ttl"),
        (lambda: Mutex("x").hold(priority="high"), "priority"),  # type: ignore[arg-type]
        (lambda: RWMutex("x", max_readers=2049), "max_readers"),
        (lambda: RWMutex("x").read(ttl=-3), "ttl"),
        (lambda: sync.Semaphore("x").hold(weight=-1), "weight"),
    ],
)
def test_bad_arguments_fail_at_once_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{field}"):
        make()


def test_reprs_and_statistics_without_any_io() -> None:
    sem = Semaphore("gpu", permits=4, namespace="ml")
    assert repr(sem) == "<Semaphore ml/gpu permits=4>"
    assert repr(Semaphore("gpu")) == "<Semaphore (default)/gpu permits=(existing)>"
    assert repr(Mutex("m", namespace="ml")) == "<Mutex ml/m>"
    assert repr(RWMutex("r", namespace="ml")) == "<RWMutex ml/r>"
    stats = sem.statistics()
    assert (stats.acquired, stats.writes, stats.waiting) == (0, 0, 0)
    with pytest.raises(AttributeError):
        stats.acquired = 1  # type: ignore[misc]


class MemoryStore:
    """Just enough of the Store protocol for one object, with optimistic concurrency."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.stats: Counter[str] = Counter()
        self.obj: dict[str, Any] = {
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "1", "generation": 1},
            "spec": dict(spec),
            "status": {},
        }
        self.gate: anyio.Event | None = None

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        if name != "s":
            raise NotFoundError("no such object", status=404)
        self.stats["get"] += 1
        return KObject(copy.deepcopy(self.obj))

    async def replace(
        self, kind: ResourceKind, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> KObject:
        self.stats["put"] += 1
        if self.gate is not None:
            await self.gate.wait()
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            self.stats["conflict"] += 1
            raise ConflictError("stale", status=409)
        self.obj["status"] = copy.deepcopy(body["status"])
        rv = int(self.obj["metadata"]["resourceVersion"]) + 1
        self.obj["metadata"]["resourceVersion"] = str(rv)
        return KObject(copy.deepcopy(self.obj))


@pytest.mark.anyio
async def test_group_commit_batches_everything_queued_during_a_write() -> None:
    store = MemoryStore({"permits": 2})
    client = Client(store=store, namespace="ns", identity=Identity("me"))  # type: ignore[arg-type]
    await client.connect()
    writer = committer(client, st.SEMAPHORE_FLAVOR, "ns", "s")
    entry = {"holder": "me", "ttlSeconds": 30, "renewCount": 0, "weight": 1, "priority": 0}
    results: dict[str, KObject] = {}

    def request(key: str) -> Any:
        def op(obj: KObject, status: st.Status) -> None:
            st.request_in_place(
                st.SEMAPHORE_FLAVOR, obj.spec, status, key, entry, now=None, nowait=False, what="s"
            )

        return op

    async def submit(key: str) -> None:
        results[key] = await writer.submit(request(key))

    store.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, "first")
        await anyio.wait_all_tasks_blocked()  # the first write is in flight...
        for i in range(20):
            tg.start_soon(submit, f"k{i}")  # ...and these queue behind it
        await anyio.wait_all_tasks_blocked()
        store.gate.set()
        store.gate = None
    assert store.stats["put"] == 2  # one write for the first, one for the other twenty
    assert store.stats["conflict"] == 0
    final = store.obj["status"]
    assert set(final["holders"]) == {"first", "k0"}
    assert [k for k, _ in st.queue(final)] == [f"k{i}" for i in range(1, 20)]
    assert results["k19"].resource_version == "3"
    assert writer.writes == 2
    await client.aclose()


@pytest.mark.anyio
async def test_an_op_that_raises_does_not_spoil_the_batch() -> None:
    store = MemoryStore({"permits": 1})
    client = Client(store=store, namespace="ns", identity=Identity("me"))  # type: ignore[arg-type]
    await client.connect()
    writer = committer(client, st.SEMAPHORE_FLAVOR, "ns", "s")
    good = {"holder": "me", "ttlSeconds": 30, "renewCount": 0, "weight": 1}
    too_big = {**good, "weight": 5}

    def request(key: str, entry: Mapping[str, Any]) -> Any:
        def op(obj: KObject, status: st.Status) -> None:
            st.request_in_place(
                st.SEMAPHORE_FLAVOR, obj.spec, status, key, entry, now=None, nowait=False, what="s"
            )

        return op

    errors: list[BaseException] = []

    async def bad() -> None:
        try:
            await writer.submit(request("bad", too_big))
        except ConfigurationError as exc:
            errors.append(exc)

    store.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.submit, request("a", good))
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(bad)
        tg.start_soon(writer.submit, request("b", good))
        await anyio.wait_all_tasks_blocked()
        store.gate.set()
    assert len(errors) == 1
    assert set(store.obj["status"]["holders"]) == {"a"}
    assert set(store.obj["status"]["waiters"]) == {"b"}
    await client.aclose()

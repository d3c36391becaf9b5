"""The compare-and-swap retry after a 409: take the newer object from the shared watch when
it delivers one (no GET), fall back to a GET without a watch or when it does not, and give
up with ConflictExhausted after ``max_attempts`` writes. No server, no timings asserted."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from konductor_sdk._kernel import cas as _cas
from konductor_sdk._kernel.clock import SYSTEM_CLOCK
from konductor_sdk._kernel.errors import ConflictError, ConflictExhausted
from konductor_sdk._kernel.objects import SEMAPHORE, KObject, ResourceKind
from konductor_sdk._kernel.watch import KindWatch

pytestmark = pytest.mark.anyio


def version(rv: str, **status: Any) -> KObject:
    return KObject(
        {
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": rv, "generation": 1},
            "spec": {},
            "status": status,
        }
    )


class OneObjectStore:
    """One object with optimistic concurrency; ``rival_write`` plays another client."""

    def __init__(self, rv: str = "1") -> None:
        self.stats: Counter[str] = Counter()
        self.obj = version(rv)
        self.always_conflict = False
        self.on_conflict: list[KindWatch] = []
        """Watches to which a rival's write is delivered each time we lose to it."""

    def rival_write(self) -> KObject:
        status = {**self.obj.status, "rival": int(self.obj.status.get("rival", 0)) + 1}
        self.obj = version(str(int(self.obj.resource_version) + 1), **status)
        return self.obj

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        self.stats["get"] += 1
        return self.obj

    async def replace(
        self, kind: ResourceKind, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> KObject:
        self.stats["put"] += 1
        if self.always_conflict:
            rival = self.rival_write()
            for watch in self.on_conflict:
                watch.observe(rival)
        if body["metadata"]["resourceVersion"] != self.obj.resource_version:
            self.stats["conflict"] += 1
            raise ConflictError("stale", status=409)
        raw = copy.deepcopy(dict(body))
        raw["metadata"]["resourceVersion"] = str(int(self.obj.resource_version) + 1)
        self.obj = KObject(raw)
        return self.obj


class FakeClient:
    """What update_status uses of a Client: store, clock, cached_watch."""

    def __init__(self, store: OneObjectStore, watch: KindWatch | None) -> None:
        self.store = store
        self.clock = SYSTEM_CLOCK
        self.watch = watch

    def cached_watch(self, kind: ResourceKind, namespace: str | None) -> KindWatch | None:
        return self.watch


def synced_watch(store: OneObjectStore, *objs: KObject) -> KindWatch:
    watch = KindWatch(store, SEMAPHORE, "ns")  # type: ignore[arg-type]
    watch.synced.set()
    for obj in objs:
        watch.observe(obj)
    return watch


class Recorder:
    """A pure mutation that adds ``mine`` and remembers every version it was given."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, obj: KObject) -> Mapping[str, Any]:
        self.seen.append(obj.resource_version)
        return {**obj.status, "mine": True}


async def update(client: FakeClient, mutate: Recorder, **kw: Any) -> _cas.CasResult:
    return await _cas.update_status(
        client,  # type: ignore[arg-type]
        SEMAPHORE,
        "ns",
        "s",
        mutate,
        **kw,
    )


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    # Behaviour, not timings: waits long enough never to time out by accident; no pauses.
    monkeypatch.setattr(_cas, "WATCH_WAIT_SECONDS", 60.0)
    monkeypatch.setattr(_cas, "JITTER_BASE", 0.0)


async def test_retry_uses_the_newer_object_the_watch_already_holds() -> None:
    store = OneObjectStore()
    stale = store.obj
    watch = synced_watch(store, stale)
    watch.observe(store.rival_write())  # rv 2: won the race, already delivered
    mutate = Recorder()
    result = await update(FakeClient(store, watch), mutate, current=stale)
    assert mutate.seen == ["1", "2"]
    assert (result.attempts, result.wrote) == (2, True)
    assert result.object.status == {"rival": 1, "mine": True}
    assert store.stats == Counter(put=2, conflict=1)  # no GET
    assert watch.get("s") == result.object


async def test_retry_waits_for_the_watch_to_deliver_the_winning_write() -> None:
    store = OneObjectStore()
    stale = store.obj
    watch = synced_watch(store, stale)
    store.rival_write()  # rv 2 is on the server, not yet in the watch
    mutate = Recorder()
    result: list[_cas.CasResult] = []

    async def run() -> None:
        result.append(await update(FakeClient(store, watch), mutate, current=stale))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert mutate.seen == ["1"]  # lost once, now waiting on the watch
        assert not result
        watch.observe(version("1"))  # an older or equal version does not wake it
        await anyio.wait_all_tasks_blocked()
        assert mutate.seen == ["1"]
        watch.observe(store.obj)  # the winning write arrives
    assert mutate.seen == ["1", "2"]
    assert result[0].attempts == 2
    assert store.stats["get"] == 0


async def test_falls_back_to_a_get_without_a_synced_watch() -> None:
    store = OneObjectStore()
    stale = store.obj
    store.rival_write()
    mutate = Recorder()
    result = await update(FakeClient(store, None), mutate, current=stale)
    assert mutate.seen == ["1", "2"]
    assert result.attempts == 2
    assert store.stats == Counter(put=2, conflict=1, get=1)


async def test_falls_back_to_a_get_when_the_watch_does_not_deliver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cas, "WATCH_WAIT_SECONDS", 0.0)
    store = OneObjectStore()
    stale = store.obj
    watch = synced_watch(store, stale)
    store.rival_write()  # never delivered to the watch
    mutate = Recorder()
    result = await update(FakeClient(store, watch), mutate, current=stale)
    assert mutate.seen == ["1", "2"]
    assert result.attempts == 2
    assert store.stats == Counter(put=2, conflict=1, get=1)


async def test_falls_back_to_a_get_when_versions_cannot_be_ordered() -> None:
    store = OneObjectStore()
    opaque = version("not-a-number")
    watch = synced_watch(store, opaque)
    mutate = Recorder()
    result = await update(FakeClient(store, watch), mutate, current=opaque)
    assert mutate.seen == ["not-a-number", "1"]
    assert result.attempts == 2
    assert store.stats["get"] == 1


async def test_gives_up_after_max_attempts_writes_fed_by_the_watch() -> None:
    store = OneObjectStore()
    watch = synced_watch(store, store.obj)
    store.always_conflict = True
    store.on_conflict.append(watch)  # each rival write that beats us reaches the watch
    mutate = Recorder()
    with pytest.raises(ConflictExhausted) as caught:
        await update(FakeClient(store, watch), mutate, max_attempts=5)
    assert caught.value.attempts == 5
    assert store.stats == Counter(put=5, conflict=5)  # no GET, exactly max_attempts writes
    # Every retry was computed on the version that beat the previous write, never stale.
    assert mutate.seen == ["1", "2", "3", "4", "5"]
    assert caught.value.resource_version == "5"


async def test_gives_up_after_max_attempts_writes_without_a_watch() -> None:
    store = OneObjectStore()
    store.always_conflict = True
    mutate = Recorder()
    with pytest.raises(ConflictExhausted) as caught:
        await update(FakeClient(store, None), mutate, max_attempts=3)
    assert caught.value.attempts == 3
    assert store.stats == Counter(put=3, conflict=3, get=3)


async def test_no_write_needed_on_the_newer_object_ends_without_writing() -> None:
    store = OneObjectStore()
    stale = store.obj
    watch = synced_watch(store, stale)
    watch.observe(store.rival_write())
    result = await update(
        FakeClient(store, watch),
        lambda obj: None if obj.status.get("rival") else {"mine": True},  # type: ignore[arg-type]
        current=stale,
    )
    assert (result.wrote, result.attempts) == (False, 1)
    assert result.object.resource_version == "2"
    assert store.stats == Counter(put=1, conflict=1)


async def test_waiting_for_the_watch_is_cancellable() -> None:
    store = OneObjectStore()
    stale = store.obj
    watch = synced_watch(store, stale)
    store.rival_write()
    mutate = Recorder()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(update, FakeClient(store, watch), mutate)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    assert mutate.seen == ["1"]
    assert store.stats == Counter(put=1, conflict=1)

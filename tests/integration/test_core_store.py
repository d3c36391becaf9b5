"""The SDK core against the real API server: store errors, CAS, renewals, shared watch."""

from __future__ import annotations

import os
from typing import Any

import anyio
import pytest
from _scratch_crd import install_scratch_crd

from konductor_sdk import (
    AlreadyExistsError,
    Client,
    ConflictError,
    ConflictExhausted,
    Identity,
    NotFoundError,
)
from konductor_sdk._kernel import cas as _cas
from konductor_sdk._kernel.cas import ensure_exists, update_status
from konductor_sdk._kernel.entries import EntryGone, Renewal, new_entry
from konductor_sdk._kernel.objects import KObject, ResourceKind
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio

GROUP = f"core{os.getpid()}.test.konductor.io"
COUNTER = ResourceKind(GROUP, "v1", "counters", "Counter")


@pytest.fixture(scope="module")
def counter_crd(control_plane: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> None:
    install_scratch_crd(control_plane, tmp_path_factory.mktemp("crds"), COUNTER)


@pytest.fixture
async def counter(counter_crd: None, client: Client) -> KObject:
    return await ensure_exists(client, COUNTER, client.namespace, "c", {"limit": 3})


def increment(obj: KObject) -> dict[str, Any]:
    return {**obj.status, "n": int(obj.status.get("n", 0)) + 1}


async def test_errors_are_translated(counter: KObject, client: Client) -> None:
    store = client.store
    with pytest.raises(NotFoundError):
        await store.get(COUNTER, client.namespace, "missing")
    with pytest.raises(AlreadyExistsError):
        await store.create(COUNTER, client.namespace, {"metadata": {"name": "c"}, "spec": {}})
    # ensure_exists on an existing object returns it and keeps the first creator's spec.
    again = await ensure_exists(client, COUNTER, client.namespace, "c", {"limit": 99})
    assert again.spec == {"limit": 3}


async def test_a_stale_status_write_conflicts(counter: KObject, client: Client) -> None:
    await client.store.replace(COUNTER, counter.with_status({"n": 1}), subresource="status")
    with pytest.raises(ConflictError):
        await client.store.replace(COUNTER, counter.with_status({"n": 2}), subresource="status")


async def test_status_writes_ignore_spec_and_spec_writes_ignore_status(
    counter: KObject, client: Client
) -> None:
    body = counter.with_status({"n": 5})
    body["spec"] = {"limit": 100}
    written = await client.store.replace(COUNTER, body, subresource="status")
    assert written.spec == {"limit": 3}
    assert written.status == {"n": 5}
    body = dict(written.raw)
    body["spec"] = {"limit": 4}
    body["status"] = {"n": 0}
    written = await client.store.replace(COUNTER, body)
    assert written.spec == {"limit": 4}
    assert written.status == {"n": 5}


async def test_concurrent_cas_loses_no_update(counter: KObject, make_client: Any) -> None:
    # 24 writers in 4 clients (separate HTTP sessions, like separate processes) race to
    # increment one counter: every increment must land exactly once.
    clients: list[Client] = [await make_client(f"w{i}").connect() for i in range(4)]
    attempts: list[int] = []

    async def writer(c: Client) -> None:
        for _ in range(3):
            result = await update_status(c, COUNTER, c.namespace, "c", increment)
            attempts.append(result.attempts)

    async with anyio.create_task_group() as tg:
        for i in range(24):
            tg.start_soon(writer, clients[i % 4])
    final = await clients[0].store.get(COUNTER, clients[0].namespace, "c")
    assert final.status["n"] == 72
    assert sum(attempts) > 72, "no conflict happened: the test did not exercise CAS"
    assert sum(c.store.stats["conflict"] for c in clients) == sum(attempts) - 72


async def test_concurrent_cas_retries_from_the_watch_without_reading(
    counter: KObject, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same race with a shared watch in every client: a write that lost retries on the
    # version the watch delivers (never a GET), and still no increment is lost.
    monkeypatch.setattr(_cas, "WATCH_WAIT_SECONDS", 60.0)  # behaviour, not timing
    clients: list[Client] = [await make_client(f"v{i}").connect() for i in range(4)]
    for c in clients:
        await c.watch(COUNTER, c.namespace)
    gets = [c.store.stats["get"] for c in clients]
    attempts: list[int] = []

    async def writer(c: Client) -> None:
        for _ in range(3):
            result = await update_status(c, COUNTER, c.namespace, "c", increment)
            attempts.append(result.attempts)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(24):
                tg.start_soon(writer, clients[i % 4])
    assert [c.store.stats["get"] for c in clients] == gets
    final = await clients[0].store.get(COUNTER, clients[0].namespace, "c")
    assert final.status["n"] == 72
    assert sum(attempts) > 72, "no conflict happened: the test did not exercise CAS"
    assert sum(c.store.stats["conflict"] for c in clients) == sum(attempts) - 72


async def test_cas_gives_up_with_conflict_exhausted(counter: KObject, client: Client) -> None:
    # A mutation that always works from a stale copy can never win.
    stale = await client.store.get(COUNTER, client.namespace, "c")
    await client.store.replace(COUNTER, stale.with_status({"n": 1}), subresource="status")

    async def always_stale() -> None:
        obj = stale
        for _ in range(3):
            try:
                await client.store.replace(COUNTER, obj.with_status({"n": 9}), subresource="status")
            except ConflictError:
                continue
            raise AssertionError("a stale write succeeded")

    await always_stale()
    with pytest.raises(ConflictExhausted) as info:
        await update_status(
            client,
            COUNTER,
            client.namespace,
            "c",
            lambda o: {"n": -1},
            max_attempts=1,
            current=stale,
        )
    assert info.value.attempts == 1


async def test_mutation_returning_none_writes_nothing(counter: KObject, client: Client) -> None:
    before = client.store.stats["put"]
    result = await update_status(client, COUNTER, client.namespace, "c", lambda o: None)
    assert not result.wrote
    assert client.store.stats["put"] == before


async def test_renewal_applies_only_while_the_entry_is_ours(
    counter: KObject, client: Client
) -> None:
    entry = new_entry(client, 5, token=7)
    written = await client.store.replace(
        COUNTER, counter.with_status({"holders": {"k/1": entry}}), subresource="status"
    )
    renewal = Renewal(
        client,
        COUNTER,
        client.namespace,
        "c",
        ("status", "holders", "k/1"),
        {"holder": client.identity.holder, "token": 7},
        5,
        client.clock.monotonic(),
    )
    await renewal.renew_once()
    await renewal.renew_once()
    obj = await client.store.get(COUNTER, client.namespace, "c")
    assert obj.status["holders"]["k/1"]["renewCount"] == 2
    assert int(obj.resource_version) > int(written.resource_version)

    # Someone reaps the entry and a new grant reuses the key with another token.
    replaced = dict(obj.status["holders"]["k/1"], token=8)
    await client.store.replace(
        COUNTER, obj.with_status({"holders": {"k/1": replaced}}), subresource="status"
    )
    with pytest.raises(EntryGone):
        await renewal.renew_once()
    # ...and the failed renewal changed nothing.
    after = await client.store.get(COUNTER, client.namespace, "c")
    assert after.status["holders"]["k/1"]["renewCount"] == 2

    await client.store.replace(COUNTER, after.with_status({}), subresource="status")
    with pytest.raises(EntryGone):
        await renewal.renew_once()


async def test_renewal_of_a_deleted_object_is_entry_gone(counter: KObject, client: Client) -> None:
    renewal = Renewal(
        client, COUNTER, client.namespace, "c", ("status", "holders", "x"), {}, 5, 0.0
    )
    await client.store.delete(COUNTER, client.namespace, "c")
    with pytest.raises(EntryGone):
        await renewal.renew_once()


async def test_one_shared_watch_wakes_a_thousand_waiters(counter: KObject, client: Client) -> None:
    watch = await client.watch(COUNTER, client.namespace)
    opened = client.store.stats["watch_opened"]
    woken = 0

    async def waiter() -> None:
        nonlocal woken
        while True:
            changed = watch.next_change("c")
            obj = watch.get("c")
            if obj is not None and obj.status.get("n") == 1:
                woken += 1
                return
            await changed.wait()

    writer = await Client(
        kubeconfig=client._kubeconfig, namespace=client.namespace, identity=Identity(holder="w")
    ).connect()
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                await update_status(writer, COUNTER, writer.namespace, "c", increment)
    finally:
        await writer.aclose()
    assert woken == 1000
    assert client.store.stats["watch_opened"] == opened  # no new connection for anyone


async def test_watch_sees_deletion(counter: KObject, client: Client) -> None:
    watch = await client.watch(COUNTER, client.namespace)
    assert watch.get("c") is not None
    changed = watch.next_change("c")
    await client.store.delete(COUNTER, client.namespace, "c")
    with anyio.fail_after(30):
        await changed.wait()
    assert watch.get("c") is None


async def test_a_list_spanning_several_pages_yields_every_object(
    counter_crd: None, client: Client
) -> None:
    ns = client.namespace
    names = [f"page-{i}" for i in range(7)]
    for name in names:
        await client.store.create(COUNTER, ns, {"metadata": {"name": name}, "spec": {}})
    first = await client.store.list(COUNTER, ns, limit=3)
    assert len(first.items) == 3
    assert first.continue_
    second = await client.store.list(COUNTER, ns, limit=3, continue_=first.continue_)
    assert second.resource_version == first.resource_version  # one snapshot

    watch = KindWatch(client.store, COUNTER, ns)
    watch.page_size = 3
    lists_before = client.store.stats["get"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(30):
            await watch.wait_synced()
        assert {o.name for o in watch.objects()} >= set(names)
        assert client.store.stats["get"] - lists_before >= 3  # pages of 3: at least 3 GETs
        # The watch goes on from the snapshot: a later change arrives.
        changed = watch.next_change("page-6")
        await client.store.delete(COUNTER, ns, "page-6")
        with anyio.fail_after(30):
            await changed.wait()
        assert watch.get("page-6") is None
        tg.cancel_scope.cancel()

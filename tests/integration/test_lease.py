"""Lease on the real API server: grants, contention, cancellation, loss, handoff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from konductor_sdk import (
    AlreadyExistsError,
    Client,
    LeadershipLost,
    NotFoundError,
    WouldBlock,
)
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.objects import CLAIM, LEASE, KObject
from konductor_sdk._kernel.store import Store
from konductor_sdk._machines.lease import grant_patch
from konductor_sdk.lease import HeldLease, Lease
from tests.integration._lease_helpers import (
    has_candidate,
    observed,
    wait_for,
    wait_for_candidates,
)

MakeClient = Callable[..., Client]


async def claims_of(client: Client, name: str) -> list[KObject]:
    listed = await client.store.list(
        CLAIM, client.namespace, field_selector=target_selector(LEASE, name)
    )
    return list(listed.items)


@pytest.mark.anyio
async def test_tokens_strictly_increase_across_acquisitions(client: Client) -> None:
    lease = Lease("tokens", ttl=5, client=client)
    tokens = []
    for _ in range(3):
        async with lease as held:
            tokens.append(held.token)
            status = await lease.status()
            assert (status.holder, status.token, status.key) == (
                client.identity.holder,
                held.token,
                held.key,
            )
            assert held.fencing.value == held.token
            assert held.fencing.resource == f"Lease/{client.namespace}/tokens@{held.uid}"
    held = await lease.acquire_nowait()
    tokens.append(held.token)
    await held.release()
    await held.release()  # idempotent
    assert tokens == [1, 2, 3, 4]
    status = await lease.status()
    assert status.holder is None
    assert (status.fencing_token, status.transitions) == (4, 4)
    stats = lease.statistics()
    assert (stats.acquisitions, stats.releases, stats.losses, stats.held) == (4, 4, 0, 0)
    assert await claims_of(client, "tokens") == []  # uncontended: no claim was ever made


class WriteCounter:
    """A store that counts writes to leases and claims (not the session's renewals)."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.stats = inner.stats
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def patch(self, kind: Any, *args: Any, **kw: Any) -> KObject:
        if kind in (LEASE, CLAIM):
            self.writes.append(f"patch {kind.plural}")
        return await self._inner.patch(kind, *args, **kw)

    async def create(self, kind: Any, *args: Any, **kw: Any) -> KObject:
        if kind in (LEASE, CLAIM):
            self.writes.append(f"create {kind.plural}")
        return await self._inner.create(kind, *args, **kw)

    async def delete(self, kind: Any, *args: Any, **kw: Any) -> None:
        if kind in (LEASE, CLAIM):
            self.writes.append(f"delete {kind.plural}")
        await self._inner.delete(kind, *args, **kw)

    async def replace(self, kind: Any, *args: Any, **kw: Any) -> KObject:
        if kind in (LEASE, CLAIM):
            self.writes.append(f"replace {kind.plural}")
        return await self._inner.replace(kind, *args, **kw)


@pytest.mark.anyio
async def test_uncontended_acquire_and_release_are_two_writes(make_client: MakeClient) -> None:
    base = make_client("alone")
    await base.connect()
    store = WriteCounter(base.store)
    client = Client(store=store, namespace=base.namespace, identity=base.identity)
    try:
        lease = Lease("two-writes", ttl=30, client=client)
        async with lease:  # first use: creates the object (and this client's session)
            pass
        store.writes.clear()
        async with lease:
            pass
        assert store.writes == ["patch leases", "patch leases"]  # grant, release
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_acquire_nowait_names_the_holder(make_client: MakeClient) -> None:
    a, b = make_client("alpha"), make_client("beta")
    async with Lease("busy", ttl=30, client=a) as held:
        with pytest.raises(WouldBlock, match="held by alpha"):
            await Lease("busy", ttl=30, client=b).acquire_nowait()
        assert held.token == 1
    status = await Lease("busy", client=b).status()
    assert status.candidates == ()  # a failed nowait never queues


@pytest.mark.anyio
async def test_contention_between_processes_never_overlaps(make_client: MakeClient) -> None:
    inside: list[str] = []
    log: list[tuple[str, int]] = []
    overlaps = []

    async def worker(c: Client, rounds: int) -> None:
        lease = Lease("contended", ttl=5, client=c)
        for _ in range(rounds):
            async with lease as held:
                inside.append(c.identity.holder)
                if len(inside) > 1:
                    overlaps.append(list(inside))
                log.append((c.identity.holder, held.token))
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
                inside.remove(c.identity.holder)

    clients = [make_client(f"w{i}") for i in range(6)]
    observer = make_client("observer")
    await Lease("contended", ttl=5, client=observer).create()
    async with observed(observer, "contended") as history:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for c in clients:
                    tg.start_soon(worker, c, 4)
    assert overlaps == []
    tokens = [t for _, t in log]
    assert tokens == list(range(1, 25))  # strictly increasing, none lost, none reused
    assert {h for h, _ in log} == {c.identity.holder for c in clients}
    # The server's own history, seen by a raw watch, agrees: one holder, +1 per grant.
    assert history.violations == []
    assert history.grants == log
    # Served claims are deleted in the background: the line empties.
    await wait_for_candidates(observer, "contended", lambda holders: holders == [])


@pytest.mark.anyio
async def test_many_candidates_from_several_clients_all_get_it(make_client: MakeClient) -> None:
    # Far past the old 32-candidate cap, from 4 clients at once; waiting never fails.
    clients = [make_client(f"many{i}") for i in range(4)]
    per_client = 40
    got: list[int] = []

    async def candidate(c: Client) -> None:
        async with Lease("crowd", ttl=10, client=c) as held:
            got.append(held.token)

    observer = make_client("observer")
    await Lease("crowd", ttl=10, client=observer).create()
    async with observed(observer, "crowd") as history:
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                for c in clients:
                    for _ in range(per_client):
                        tg.start_soon(candidate, c)
    assert sorted(got) == list(range(1, 4 * per_client + 1))
    assert history.violations == []
    await wait_for_candidates(observer, "crowd", lambda holders: holders == [])


@pytest.mark.anyio
async def test_candidates_are_served_by_priority_then_in_arrival_order(
    make_client: MakeClient,
) -> None:
    owner = make_client("owner")
    held = await Lease("order", ttl=3600, client=owner, priority=9).acquire()
    order: list[str] = []

    async def want(c: Client, priority: int) -> None:
        h = await Lease("order", ttl=3600, client=c, priority=priority).acquire()
        order.append(c.identity.holder)
        await h.release()

    arrivals = [("a0", 0), ("b5", 5), ("c0", 0), ("d5", 5), ("e-3", -3), ("f0", 0)]
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i, (who, priority) in enumerate(arrivals):
                tg.start_soon(want, make_client(who), priority)
                # Arrival order is the claims' creation order: wait for each to be queued.
                await wait_for_candidates(owner, "order", lambda hs, n=i + 1: len(hs) == n)
            await held.release()
    assert order == ["b5", "d5", "a0", "c0", "f0", "e-3"]


@pytest.mark.anyio
async def test_release_hands_over_without_waiting_out_the_ttl(make_client: MakeClient) -> None:
    # An hour-long TTL: if the standby got the lease in this test at all, it did not
    # wait the TTL out; it reacted to the release on its watch.
    a, b = make_client("leader"), make_client("standby")
    held = await Lease("handoff", ttl=3600, client=a).acquire()
    standby = Lease("handoff", ttl=3600, client=b)
    async with anyio.create_task_group() as tg:
        got: list[HeldLease] = []

        async def wait() -> None:
            got.append(await standby.acquire())

        tg.start_soon(wait)
        await wait_for_candidates(a, "handoff", has_candidate("standby"))
        assert not got
        await held.release()
    assert got[0].token == held.token + 1
    await got[0].release()


@pytest.mark.anyio
async def test_cancelled_waiter_leaves_nothing_behind(make_client: MakeClient) -> None:
    a, b = make_client("holder"), make_client("quitter")
    held = await Lease("quit", ttl=30, client=a).acquire()
    quitter = Lease("quit", ttl=30, client=b)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(quitter.acquire)
            await wait_for_candidates(a, "quit", has_candidate("quitter"))
            scope.cancel()
    assert quitter.statistics().waiting == 0
    assert await claims_of(a, "quit") == []
    obj = await a.store.get(LEASE, a.namespace, "quit")
    assert obj.status["holder"] == "holder"
    await held.release()


@pytest.mark.anyio
async def test_cancelled_candidate_withdraws_its_handoff_request(
    make_client: MakeClient,
) -> None:
    a, b = make_client("writer"), make_client("quitter")
    await a.connect()
    # A holder that never hands over (written by hand, as an old client would have).
    await Lease("withdraw", ttl=3600, client=a).create()
    obj = await a.store.get(LEASE, a.namespace, "withdraw")
    entry = {
        "holder": "stubborn",
        "creator": await a.whoami(),
        "session": "none",
        "ttlSeconds": 3600,
        "renewCount": 0,
        "priority": 0,
    }
    ops, _ = grant_patch(obj.status, key="stubborn#1", entry=entry)
    await a.store.patch(
        LEASE, a.namespace, "withdraw", ops, patch_type="json", subresource="status"
    )
    quitter = Lease("withdraw", ttl=3600, client=b, priority=5)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(quitter.acquire)
            await wait_for(a, "withdraw", lambda o: o.status.get("preferredHolder") == "quitter")
            scope.cancel()
    assert await claims_of(a, "withdraw") == []
    obj = await a.store.get(LEASE, a.namespace, "withdraw")
    assert obj.status["holder"] == "stubborn"
    assert obj.status["preferredHolder"] == ""


class GrantThenHang:
    """A store whose first status write that grants to ``holder`` reaches the server,
    but whose answer never arrives: the caller is cancelled not knowing it won."""

    def __init__(self, inner: Store, holder: str) -> None:
        self._inner = inner
        self._holder = holder
        self.hung = anyio.Event()
        self.stats = inner.stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def patch(self, kind: Any, namespace: Any, name: Any, patch: Any, **kw: Any) -> KObject:
        obj = await self._inner.patch(kind, namespace, name, patch, **kw)
        grants = [
            op for op in patch if isinstance(op, dict) and op.get("path") == "/status/holders"
        ]
        mine = any(e["holder"] == self._holder for op in grants for e in op["value"].values())
        if not self.hung.is_set() and mine:
            self.hung.set()
            await anyio.sleep_forever()
        return obj


@pytest.mark.anyio
async def test_grant_to_a_cancelled_caller_is_released(
    client: Client, make_client: MakeClient
) -> None:
    base = make_client("unlucky")
    await base.connect()
    store = GrantThenHang(base.store, "unlucky")
    unlucky = Client(store=store, namespace=client.namespace, identity=base.identity)
    try:
        lease = Lease("cancel-grant", ttl=30, client=unlucky)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lease.acquire)
                await store.hung.wait()
                scope.cancel()
        # The grant reached the server (token 1 was issued), and nothing but the cancelled
        # caller itself could have removed it again.
        obj = await client.store.get(LEASE, client.namespace, "cancel-grant")
        assert obj.status["fencingToken"] == 1
        assert obj.status["holder"] == "", obj.status
        assert obj.status["holders"] == {}
        assert lease.statistics().held == 0
    finally:
        await unlucky.aclose()


@pytest.mark.anyio
async def test_loss_cancels_the_body_and_raises_on_exit(client: Client) -> None:
    lease = Lease("lost", ttl=30, client=client)
    reached_end = False
    holds: list[HeldLease] = []

    async def body() -> None:
        nonlocal reached_end
        async with lease as held:
            holds.append(held)
            # Someone allowed to (its creator; the operator reaping it) removes our entry.
            obj = await client.store.get(LEASE, client.namespace, "lost")
            status = {**obj.status, "holders": {}, "holder": ""}
            await client.store.replace(LEASE, obj.with_status(status), subresource="status")
            await anyio.sleep_forever()
            reached_end = True

    with pytest.raises(LeadershipLost, match="removed") as info:
        await body()
    assert not reached_end
    (held,) = holds
    assert held.lost
    assert "removed" in (held.lost_reason or "")
    assert "token 1" in str(info.value)
    assert lease.statistics().losses == 1


@pytest.mark.anyio
async def test_deleting_the_object_ends_the_hold(client: Client) -> None:
    lease = Lease("deleted", ttl=30, client=client)

    async def body() -> None:
        async with lease:
            await lease.delete()
            await anyio.sleep_forever()

    with pytest.raises(LeadershipLost, match="deleted"):
        await body()
    with pytest.raises(NotFoundError):
        await lease.status()


@pytest.mark.anyio
async def test_body_errors_propagate_and_the_lease_is_released(client: Client) -> None:
    lease = Lease("body-error", ttl=30, client=client)
    with pytest.raises(KeyError):
        async with lease:
            raise KeyError("boom")
    assert (await lease.status()).holder is None


@pytest.mark.anyio
async def test_create_status_delete(client: Client) -> None:
    lease = Lease("admin", ttl=42, client=client)
    await lease.create()
    with pytest.raises(AlreadyExistsError):
        await lease.create()
    await lease.create(exist_ok=True)
    status = await lease.status()
    assert (status.ttl_seconds, status.holder, status.fencing_token) == (42, None, 0)
    assert repr(lease) == f"<Lease {client.namespace}/admin ttl=42 priority=0 held=0 waiting=0>"
    await lease.delete()
    with pytest.raises(NotFoundError):
        await lease.delete()


@pytest.mark.anyio
async def test_background_renewal_of_an_explicit_acquire(client: Client) -> None:
    lease = Lease("renewed", ttl=2, client=client)
    held = await lease.acquire()
    first = (await lease.status()).renew_count
    await wait_for(client, "renewed", lambda o: o.status["holders"][held.key]["renewCount"] >= 3)
    assert first == 0
    assert not held.lost
    status = await lease.status()
    assert status.renewed_at is not None
    assert status.acquired_at is not None
    assert status.renewed_at > status.acquired_at
    obj = await client.store.get(LEASE, client.namespace, "renewed")
    entry = obj.status["holders"][held.key]
    assert entry["session"] == held.session
    assert entry["creator"] == await client.whoami()
    assert repr(held).endswith("held>")
    await held.release()
    assert repr(held).endswith("released>")

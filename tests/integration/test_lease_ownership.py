"""Who may do what to a lease, enforced by the API server (crds/lease.yaml rules and
policies/lease.yaml), with two minted users bound to ``konductor-user``.

Alice holds a lease; Bob, another user of the same namespace, tries to forge, remove,
impersonate, rewind and exhaust her grant by status writes, object writes and deletes:
every attempt is refused by the server. Then the consequences for the protocol: replicas of
one user take over each other's expired leases themselves; a candidate of another user
waits until the operator (a user allowed ``override``) has removed the expired entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from konductor_sdk import APIError, Client, Identity, LeadershipLost
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._kernel.sessions import sessions_of
from konductor_sdk._kernel.store import Store
from konductor_sdk._machines.lease import grant_patch, release_patch, renew_patch
from konductor_sdk.lease import HeldLease, Lease
from konductor_sdk.testing import ClusterHandle
from tests.integration._lease_helpers import has_candidate, wait_for, wait_for_candidates
from tests.integration._ownership import bind_user

pytestmark = pytest.mark.anyio
INT64_MAX = 2**63 - 1


class LeaseWrites:
    """A store that records the status patches a client sends to leases."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.stats = inner.stats
        self.patches: list[list[dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def patch(self, kind: Any, namespace: Any, name: Any, patch: Any, **kw: Any) -> KObject:
        if kind == LEASE:
            self.patches.append(patch)
        return await self._inner.patch(kind, namespace, name, patch, **kw)


@asynccontextmanager
async def users(
    control_plane: ClusterHandle, namespace: str, *names: str, clock: FakeClock | None = None
) -> AsyncIterator[list[Client]]:
    """One client per user name (repeat a name for two processes of one user), each with
    a :class:`LeaseWrites` store; all share ``clock``."""
    configs = {n: await bind_user(control_plane, namespace, n) for n in dict.fromkeys(names)}
    bases: list[Client] = []
    clients: list[Client] = []
    try:
        for i, n in enumerate(names):
            base = Client(kubeconfig=configs[n], namespace=namespace)
            bases.append(base)
            await base.connect()
            clients.append(
                Client(
                    store=LeaseWrites(base.store),
                    namespace=namespace,
                    identity=Identity(holder=f"{n}-pod{i}"),
                    clock=clock or FakeClock(),
                )
            )
        yield clients
    finally:
        for c in [*clients, *bases]:
            await c.aclose()


def writes(client: Client) -> list[list[dict[str, Any]]]:
    store = client.store
    assert isinstance(store, LeaseWrites)
    return store.patches


async def status_patch(client: Client, name: str, ops: list[dict[str, Any]]) -> KObject:
    return await client.store.patch(
        LEASE, client.namespace, name, ops, patch_type="json", subresource="status"
    )


async def refused(attempt: Any, fragment: str) -> str:
    with pytest.raises(APIError) as info:
        await attempt
    assert fragment in str(info.value), str(info.value)
    return str(info.value)


async def test_another_user_cannot_touch_a_grant(
    control_plane: ClusterHandle, namespace: str, api_client: object
) -> None:
    async with users(control_plane, namespace, "alice", "bob") as (alice, bob):
        lease = Lease("guarded", ttl=3600, client=alice)
        held = await lease.acquire()
        obj = await bob.store.get(LEASE, namespace, "guarded")
        key, token = held.key, held.token
        entry = obj.status["holders"][key]
        assert entry["creator"] == "alice"
        ptr = f"/status/holders/{key.replace('~', '~0').replace('/', '~1')}"

        # Take it over (live or not, it is not Bob's to remove).
        takeover, _ = grant_patch(
            obj.status,
            key="bob#1",
            entry={**entry, "holder": "bob-pod", "creator": "bob", "session": "x"},
        )
        await refused(status_patch(bob, "guarded", takeover), "may release or take over")
        # Release it, renew it (keep it alive for her), rewrite it.
        await refused(
            status_patch(bob, "guarded", release_patch(key=key, token=token)), "may release"
        )
        renewal = renew_patch(key=key, token=token, renew_count=99, now="2030-01-01T00:00:00Z")
        await refused(status_patch(bob, "guarded", renewal), "may renew or change it")
        await refused(
            status_patch(
                bob, "guarded", [{"op": "replace", "path": f"{ptr}/ttlSeconds", "value": 1}]
            ),
            "may renew or change it",
        )
        # Impersonate her: a fresh grant in her name.
        await held.release()
        obj = await bob.store.get(LEASE, namespace, "guarded")
        forged, _ = grant_patch(
            obj.status, key="alice#2", entry={**entry, "creator": "alice", "session": "x"}
        )
        await refused(status_patch(bob, "guarded", forged), "must name the requesting user")
        # Rewind, remove or exhaust the fencing counter.
        for ops, fragment in [
            ([{"op": "replace", "path": "/status/fencingToken", "value": 0}], "never decreases"),
            ([{"op": "remove", "path": "/status/fencingToken"}], "never decreases"),
            ([{"op": "replace", "path": "/status/fencingToken", "value": INT64_MAX}], "at most"),
            ([{"op": "replace", "path": "/status/fencingToken", "value": token + 1}], "grant"),
            ([{"op": "replace", "path": "/status/transitions", "value": 0}], "transitions"),
        ]:
            await refused(status_patch(bob, "guarded", ops), fragment)
        # A whole-status PUT that drops everything.
        body = obj.with_status({})
        await refused(bob.store.replace(LEASE, body, subresource="status"), "never decreases")
        # Object writes: the spec, and deleting the object (tokens would restart).
        await refused(
            bob.store.patch(LEASE, namespace, "guarded", {"spec": {"ttlSeconds": 1}}),
            "forbidden",
        )
        await refused(bob.store.delete(LEASE, namespace, "guarded"), "only its creator")
        # Bob's own legitimate grant is fine, and takes the next token.
        async with Lease("guarded", ttl=3600, client=bob) as mine:
            assert mine.token == token + 1
        after = await alice.store.get(LEASE, namespace, "guarded")
        assert after.status["fencingToken"] == token + 1


async def test_a_candidate_may_ask_for_a_handoff_across_users(
    control_plane: ClusterHandle, namespace: str, api_client: object
) -> None:
    # preferredHolder is cooperative: any candidate may set it (documented).
    async with users(control_plane, namespace, "alice", "bob") as (alice, bob):
        events: list[str] = []

        async def hold() -> None:
            try:
                async with Lease("handoff", ttl=3600, client=alice, priority=0):
                    events.append("alice holds")
                    await anyio.sleep_forever()
            except LeadershipLost:
                events.append("alice yielded")

        got: list[HeldLease] = []
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold)
                await wait_for(bob, "handoff", lambda o: o.status.get("holder") == "alice-pod0")
                got.append(await Lease("handoff", ttl=3600, client=bob, priority=5).acquire())
        assert events == ["alice holds", "alice yielded"]
        assert got[0].token == 2
        await got[0].release()


async def test_same_user_takes_over_an_expired_lease_itself(
    control_plane: ClusterHandle, namespace: str, api_client: object
) -> None:
    clock = FakeClock()
    async with users(control_plane, namespace, "alice", "alice", clock=clock) as (a1, a2):
        await frozen_holder(a1, "same-user", ttl=5)
        got: list[HeldLease] = []
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                got.append(await Lease("same-user", ttl=5, client=a2).acquire())

            tg.start_soon(take)
            await wait_for_candidates(a2, "same-user", has_candidate("alice-pod1"))
            clock.advance(6)  # past the frozen holder's TTL on a2's clock
        assert got[0].token == 2
        await got[0].release()


async def test_another_user_waits_for_the_operator_to_remove_an_expired_holder(
    control_plane: ClusterHandle, namespace: str, api_client: object, client: Client
) -> None:
    clock = FakeClock()
    async with users(control_plane, namespace, "alice", "bob", clock=clock) as (alice, bob):
        await frozen_holder(alice, "cross-user", ttl=5)
        got: list[HeldLease] = []
        bob_lease = Lease("cross-user", ttl=5, client=bob)
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                got.append(await bob_lease.acquire())

            tg.start_soon(take)
            await wait_for_candidates(bob, "cross-user", has_candidate("bob-pod1"))
            clock.advance(60)  # long expired on Bob's clock...
            evaluations = bob_lease.statistics().evaluations
            with anyio.fail_after(30):  # ...Bob judges again (every ttl/3) and still waits
                while bob_lease.statistics().evaluations < evaluations + 2:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            assert not got
            assert writes(bob) == []  # Bob never even tried to remove Alice's entry
            # The operator (here: an admin, allowed 'override') reaps the expired entry.
            obj = await client.store.get(LEASE, namespace, "cross-user")
            key = next(iter(obj.status["holders"]))
            token = obj.status["holders"][key]["token"]
            await status_patch(client, "cross-user", release_patch(key=key, token=token))
        assert got[0].token == 2
        assert len(writes(bob)) == 1  # and then it wrote its grant, once
        await got[0].release()


async def frozen_holder(client: Client, name: str, *, ttl: int) -> None:
    """A grant by ``client``'s user whose process froze right after it: never renewed."""
    lease = Lease(name, ttl=ttl, client=client)
    await lease.create()
    obj = await client.store.get(LEASE, client.namespace, name)
    session = await sessions_of(client).get(ttl)
    entry = {
        "holder": "frozen",
        "creator": await client.whoami(),
        "session": session.name,
        "ttlSeconds": ttl,
        "renewCount": 0,
        "priority": 0,
    }
    ops, _ = grant_patch(obj.status, key="frozen#1", entry=entry)
    await status_patch(client, name, ops)

"""Sessions and claims on the real API server: liveness, order, ownership."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from konductor_sdk import Client, ForbiddenError, InvalidObjectError
from konductor_sdk._kernel.claims import claim_queue, create_claim, delete_claim
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, SESSION
from konductor_sdk._kernel.sessions import safety_margin, sessions_of
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import bind_user

pytestmark = pytest.mark.anyio


async def test_a_session_is_created_once_renewed_and_deleted_on_close(
    make_client: Callable[..., Client],
) -> None:
    client, observer = make_client(), make_client()
    sessions = sessions_of(client)
    first = await sessions.get(3)
    assert await sessions.get(3) is first  # one per ttl
    other = await sessions.get(5)
    assert other is not first
    obj = await client.store.get(SESSION, client.namespace, first.name)
    assert obj.spec["ttlSeconds"] == 3
    assert obj.spec["holder"] == client.identity.holder
    assert obj.creator == await client.whoami()  # stamped by the admission policy

    watch = await observer.watch(SESSION, client.namespace)
    with anyio.fail_after(10):  # renewals every ttl/3 = 1 s
        while True:
            changed = watch.next_change(first.name)
            seen = watch.get(first.name)
            if seen is not None and seen.spec["renewCount"] >= 2:
                break
            await changed.wait()
    assert not first.lost

    await client.aclose()
    assert first.lost
    assert other.lost
    await observer.connect()
    left = {o.name for o in (await observer.store.list(SESSION, observer.namespace)).items}
    assert not left & {first.name, other.name}


async def test_closing_deletes_idle_sessions_but_keeps_those_holding(
    make_client: Callable[..., Client],
) -> None:
    client, observer = make_client(), make_client()
    idle = await sessions_of(client).get(30)
    busy = await sessions_of(client).get(31)
    busy.holds = 1  # something acquired under it is still held (a detached acquire)
    await client.aclose()
    await observer.connect()
    left = {o.name for o in (await observer.store.list(SESSION, observer.namespace)).items}
    assert busy.name in left
    assert idle.name not in left


async def test_lost_turns_true_at_the_deadline_without_any_task_noticing(
    make_client: Callable[..., Client],
) -> None:
    clock = FakeClock()
    client = make_client(clock=clock)
    session = await sessions_of(client).get(10)
    assert session.deadline == pytest.approx(clock.monotonic() + 10 - safety_margin(10), abs=1)
    assert not session.lost
    clock.advance(session.remaining + 0.001)
    assert session.lost  # read, not pushed: no renewer ran in between
    assert "ttl" in (session.lost_reason or "")
    assert sessions_of(client).current(10) is None


async def test_a_deleted_session_is_lost_on_its_next_renewal(
    make_client: Callable[..., Client],
) -> None:
    client = make_client()
    session = await sessions_of(client).get(1)
    lost: list[str] = []
    session.on_lost(lost.append)
    await client.store.delete(SESSION, client.namespace, session.name)
    with anyio.fail_after(5):
        await session.wait_lost()
    assert lost
    assert "deleted" in lost[0]
    fresh = await sessions_of(client).get(1)
    assert fresh.name != session.name
    assert not fresh.lost


async def test_claims_queue_in_priority_then_creation_order(
    make_client: Callable[..., Client],
) -> None:
    a, b = make_client("a"), make_client("b")
    sa, sb = await sessions_of(a).get(30), await sessions_of(b).get(30)
    async with claim_queue(a, SEMAPHORE, "pool") as queue:
        made = []
        for client, session, prio in [(a, sa, 0), (b, sb, 0), (a, sa, 5), (b, sb, -1), (a, sa, 0)]:
            made.append(await create_claim(client, session, SEMAPHORE, "pool", {"priority": prio}))
        with anyio.fail_after(10):
            while not queue.seen(made[-1].name):
                await queue.next_change().wait()
        order = [c.name for c in queue.ordered()]
        assert order == [made[i].name for i in (2, 0, 1, 4, 3)]
        assert queue.position(made[2].name) == 0
        # a claim of another target is not in this queue
        await create_claim(b, sb, SEMAPHORE, "other", {})
        await delete_claim(a, made[2])
        with anyio.fail_after(10):
            while queue.seen(made[2].name):
                await queue.next_change().wait()
        assert [c.name for c in queue.ordered()] == [made[i].name for i in (0, 1, 4, 3)]


async def test_claims_are_immutable(make_client: Callable[..., Client]) -> None:
    client = make_client()
    session = await sessions_of(client).get(30)
    claim = await create_claim(client, session, SEMAPHORE, "pool", {"priority": 1})
    with pytest.raises(InvalidObjectError, match="immutable"):
        await client.store.patch(
            CLAIM, client.namespace, claim.name, {"spec": {"priority": 9}}, patch_type="merge"
        )


async def test_only_the_creator_may_change_or_delete_a_participant(
    control_plane: ClusterHandle, namespace: str, api_client: object
) -> None:
    alice_cfg: Path = await bind_user(control_plane, namespace, "alice")
    bob_cfg: Path = await bind_user(control_plane, namespace, "bob")
    async with (
        Client(kubeconfig=alice_cfg, namespace=namespace) as alice,
        Client(kubeconfig=bob_cfg, namespace=namespace) as bob,
    ):
        assert await alice.whoami() == "alice"
        session = await sessions_of(alice).get(30)
        claim = await create_claim(alice, session, SEMAPHORE, "pool", {})
        await bob.connect()
        for attempt in (
            bob.store.delete(SESSION, namespace, session.name),
            bob.store.delete(CLAIM, namespace, claim.name),
            bob.store.patch(
                SESSION, namespace, session.name, {"spec": {"renewCount": 999}}, patch_type="merge"
            ),
        ):
            with pytest.raises((ForbiddenError, InvalidObjectError), match="only its creator"):
                await attempt
        # a client cannot claim to be someone else: the creator is taken from the request
        body = {
            "metadata": {
                "generateName": "forged-",
                "annotations": {"sync.konductor.io/creator": "alice"},
            },
            "spec": {"holder": "bob", "ttlSeconds": 30, "renewCount": 0},
        }
        forged = await bob.store.create(SESSION, namespace, body)
        assert forged.creator == "bob"
        await delete_claim(alice, claim)  # the creator may

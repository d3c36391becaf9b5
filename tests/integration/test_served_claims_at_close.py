"""A client closed right after an explicit grant still deletes the claim it was served
from (a detached ``koncli semaphore acquire`` does exactly that). Left behind, the claim
would count as waiting again once the grant is released, first in line, for as long as
its session lives: every later waiter would wait for it."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from konductor_sdk import Client, Lease, Semaphore
from konductor_sdk._kernel.claims import claim_queue, target_selector
from konductor_sdk._kernel.objects import CLAIM, LEASE, SEMAPHORE, ResourceKind

pytestmark = pytest.mark.anyio


async def until_queued(observer: Client, kind: ResourceKind, name: str) -> None:
    """Until a claim on ``name`` exists (seen on a watch of its claims)."""
    async with claim_queue(observer, kind, name) as queue:
        with anyio.fail_after(30):
            while not len(queue):
                await queue.next_change().wait()


async def claims_on(observer: Client, kind_name: tuple[object, str]) -> list[str]:
    kind, name = kind_name
    listed = await observer.store.list(
        CLAIM,
        observer.namespace,
        field_selector=target_selector(kind, name),  # type: ignore[arg-type]
    )
    return [c.name for c in listed.items if not c.deleting]


async def test_a_semaphore_grant_served_from_a_claim_leaves_none_behind(
    client: Client, make_client: Callable[..., Client]
) -> None:
    holder, waiter = make_client("holder"), make_client("waiter")
    await Semaphore("gpu", permits=1, client=client).create()
    first = await Semaphore("gpu", client=holder).acquire(ttl=60)
    async with anyio.create_task_group() as tg:
        got: list[object] = []

        async def wait() -> None:
            got.append(await Semaphore("gpu", client=waiter).acquire(ttl=60))

        tg.start_soon(wait)
        await until_queued(client, SEMAPHORE, "gpu")
        await first.release()
    # Granted from its claim; the client closes at once, as a detached acquire does.
    await waiter.aclose()
    assert await claims_on(client, (SEMAPHORE, "gpu")) == []


async def test_a_lease_grant_served_from_a_claim_leaves_none_behind(
    client: Client, make_client: Callable[..., Client]
) -> None:
    holder, candidate = make_client("holder"), make_client("candidate")
    held = await Lease("leader", ttl=30, client=holder).acquire()
    async with anyio.create_task_group() as tg:

        async def campaign() -> None:
            await Lease("leader", ttl=30, client=candidate).acquire()

        tg.start_soon(campaign)
        await until_queued(client, LEASE, "leader")
        await held.release()
    await candidate.aclose()
    assert await claims_on(client, (LEASE, "leader")) == []

"""Shared helpers for the barrier/once/waitgroup integration tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import anyio

from konductor_sdk import Client
from konductor_sdk._kernel.objects import KObject, ResourceKind

_pokes = itertools.count()


async def until(
    client: Client, kind: ResourceKind, name: str, predicate: Callable[[KObject], bool]
) -> KObject:
    """Wait (on the client's shared watch, no polling) until ``predicate(obj)`` holds."""
    watch = await client.watch(kind, client.namespace)
    while True:
        changed = watch.next_change(name)
        obj = watch.get(name)
        if obj is not None and predicate(obj):
            return obj
        await changed.wait()


async def poke(client: Client, kind: ResourceKind, name: str) -> None:
    """Touch the object's metadata: every watcher gets an event and re-evaluates (tests
    with a FakeClock use this to make waiters look at the time they were moved to)."""
    patch = {"metadata": {"annotations": {"test.konductor.io/poke": str(next(_pokes))}}}
    await client.store.patch(kind, client.namespace, name, patch)


def status_of(obj: KObject) -> dict[str, object]:
    return dict(obj.status)


async def eventually(condition: Callable[[], bool], *, limit: float = 20) -> None:
    """Wait until a condition on *local* state holds (e.g. a waiter's statistics), checking
    after every scheduling round; fails after ``limit`` seconds. Used only where no watch
    event exists to wait on: asserting on what a waiter has seen, not on timing."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - local state has no event to await
            await anyio.sleep(0.005)


async def claimed_parties(client: Client, barrier: str, count: int) -> None:
    """Wait (on a watch of the barrier's arrival claims) until they name ``count`` parties:
    a process that opened a generation creates its claim after telling its parties."""
    from konductor_sdk._kernel.claims import claim_queue
    from konductor_sdk._kernel.objects import BARRIER

    await client.connect()
    async with claim_queue(client, BARRIER, barrier) as queue:
        while sum(len(c.spec.get("parties") or ()) for c in queue.ordered()) < count:
            await queue.next_change().wait()

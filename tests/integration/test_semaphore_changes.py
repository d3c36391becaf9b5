"""``Semaphore.changes()`` / ``Mutex.changes()``: the status now and after every change,
from the shared watch, for watchers that must not reach into the kernel."""

from __future__ import annotations

import anyio
import pytest

from konductor_sdk import Client, Mutex, NotFoundError, Semaphore, SemaphoreStatus

pytestmark = pytest.mark.anyio


async def test_changes_follow_grants_releases_and_deletion(client: Client) -> None:
    sem = Semaphore("gpu", permits=2, client=client)
    await sem.create()
    seen: list[SemaphoreStatus] = []
    with anyio.fail_after(30):
        changes = sem.changes()
        seen.append(await anext(changes))
        assert (seen[0].in_use, seen[0].holders) == (0, ())
        permit = await sem.acquire(weight=2, ttl=30)
        async for status in changes:
            if status.in_use == 2:
                assert [h.key for h in status.holders] == [permit.key]
                break
        await permit.release()
        async for status in changes:
            if status.in_use == 0:
                break
        await sem.delete()
        with pytest.raises(NotFoundError):
            async for _ in changes:
                pass


async def test_a_missing_lock_raises_not_found(client: Client) -> None:
    with anyio.fail_after(30), pytest.raises(NotFoundError, match="does not exist"):
        await anext(Mutex("nope", client=client).changes())

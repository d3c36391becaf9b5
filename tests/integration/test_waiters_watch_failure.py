"""A queued waiter whose watches fail (403, or the server unreachable past the client's
retry budget) is told, with that error, instead of waiting for a grant nobody can plan: a
failed watch delivers nothing more, not even its own claim. The client goes on."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from _semaphore_helpers import until_queued

from konductor_sdk import Client, Semaphore, UnreachableError
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE
from konductor_sdk._kernel.watch import KindWatch

pytestmark = pytest.mark.anyio


def claim_watch(client: Client, name: str) -> KindWatch:
    key = (CLAIM, client.namespace, target_selector(SEMAPHORE, name), None)
    return client._selected[key].watch


def object_watch(client: Client) -> KindWatch:
    watch = client.cached_watch(SEMAPHORE, client.namespace)
    assert watch is not None
    return watch


@pytest.mark.parametrize("which", ["claims", "object"])
async def test_a_queued_waiter_is_told_when_a_watch_fails_and_the_client_goes_on(
    make_client: Callable[..., Client], which: str
) -> None:
    name = f"failing-{which}"
    holder, client = make_client("holder"), make_client("waiter")
    held = await Semaphore(name, permits=1, client=holder).acquire(ttl=30)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            raised: list[BaseException] = []

            async def wait() -> None:
                try:
                    await Semaphore(name, client=client).acquire(ttl=30)
                except UnreachableError as exc:
                    raised.append(exc)

            tg.start_soon(wait)
            await until_queued(holder, name, lambda claims: len(claims) == 1)
            watch = claim_watch(client, name) if which == "claims" else object_watch(client)
            watch._fail(UnreachableError("the API server went away (test)", budget=0))
        assert [str(e) for e in raised] == ["the API server went away (test)"]
        # Its claim is dropped, and the client serves the next acquire on new watches.
        await until_queued(holder, name, lambda claims: not claims)
        await held.release()
        permit = await Semaphore(name, client=client).acquire(ttl=30)
        await permit.release()

"""A queued waiter whose watches fail (403, or the server unreachable past the client's
retry budget) is told, with that error, instead of waiting for a grant nobody can plan: a
failed watch delivers nothing more, not even its own claim. The client goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from _semaphore_helpers import until_queued

from konductor_sdk import Client, Identity, Semaphore, UnreachableError
from konductor_sdk._engines.semaphore_grants import coordinator
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, KObject, ResourceKind
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk._machines.semaphore import SEMAPHORE_KIND

pytestmark = pytest.mark.anyio


def claim_watch(client: Client, name: str) -> KindWatch:
    key = (CLAIM, client.namespace, target_selector(SEMAPHORE, name), None)
    return client._selected[key].watch


def object_watch(client: Client) -> KindWatch:
    watch = client.cached_watch(SEMAPHORE, client.namespace)
    assert watch is not None
    return watch


async def until_joined(client: Client, name: str) -> None:
    coord = coordinator(client, SEMAPHORE_KIND, client.namespace, name)
    with anyio.fail_after(30):
        # It sets no event a test could wait on: its table of waiters is watched, bounded.
        while not coord.waiters:  # noqa: ASYNC110
            await anyio.sleep(0.01)


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
            # The claim is in the queue before its create's answer is back; the watch fails
            # once the waiter has joined its coordinator (before that, see the test below).
            await until_joined(client, name)
            watch = claim_watch(client, name) if which == "claims" else object_watch(client)
            watch._fail(UnreachableError("the API server went away (test)", budget=0))
        assert [str(e) for e in raised] == ["the API server went away (test)"]
        # Its claim is dropped, and the client serves the next acquire on new watches.
        await until_queued(holder, name, lambda claims: not claims)
        await held.release()
        permit = await Semaphore(name, client=client).acquire(ttl=30)
        await permit.release()


class WatchFailsBeforeHandover:
    """A real store; once the first claim create lands, and before its answer returns, the
    client's object watch (or its claim watch) fails and the coordinator's run ends on it
    (an unlucky moment of the run above, made certain)."""

    def __init__(self, inner: Any, name: str, which: str) -> None:
        self._inner = inner
        self.name = name
        self.which = which
        self.stats = inner.stats
        self.client: Client | None = None
        self.failed = False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any], **kw: Any
    ) -> KObject:
        created: KObject = await self._inner.create(kind, namespace, body, **kw)
        if kind == CLAIM and not self.failed:
            self.failed = True
            assert self.client is not None
            coord = coordinator(self.client, SEMAPHORE_KIND, self.client.namespace, self.name)
            watch = (
                object_watch(self.client)
                if self.which == "object"
                else claim_watch(self.client, self.name)
            )
            watch._fail(UnreachableError("gone (test)", budget=0))
            with anyio.fail_after(10):
                # The run ends on the failure (it has no waiter yet); it sets no event of
                # its own that a test could wait on, so its flag is watched, bounded.
                while coord._running:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        return created


@asynccontextmanager
async def handed_over_late(
    make_client: Callable[..., Client], name: str, which: str
) -> AsyncIterator[tuple[Client, Client]]:
    """(holder's client, waiter's client): the waiter's ``which`` watch fails between its
    first claim's create and the answer (:class:`WatchFailsBeforeHandover`)."""
    base = make_client(holder="holder")
    await base.connect()
    store = WatchFailsBeforeHandover(base.store, name, which)
    client = Client(store=store, namespace=base.namespace, identity=Identity("waiter"))  # type: ignore[arg-type]
    store.client = client
    try:
        yield base, client
        assert store.failed
    finally:
        await client.aclose()


async def test_a_waiter_handed_over_after_the_object_watch_failed_is_told(
    make_client: Callable[..., Client],
) -> None:
    name = "failed-before-handover"
    async with handed_over_late(make_client, name, "object") as (base, client):
        held = await Semaphore(name, permits=1, client=base).acquire(ttl=30)
        with anyio.fail_after(30), pytest.raises(UnreachableError, match="gone"):
            await Semaphore(name, client=client).acquire(ttl=30)
        await held.release()
        # The next acquire watches anew.
        with anyio.fail_after(30):
            permit = await Semaphore(name, client=client).acquire(ttl=30)
        await permit.release()


async def test_a_waiter_handed_over_after_its_claim_watch_failed_is_served_on_a_new_one(
    make_client: Callable[..., Client],
) -> None:
    # Unlike the object watch (only a new acquire watches it anew), a failed claim watch is
    # replaced by the next run's: the waiter it was handed to is planned for, not failed.
    name = "claims-failed-before-handover"
    async with handed_over_late(make_client, name, "claims") as (base, client):
        held = await Semaphore(name, permits=1, client=base).acquire(ttl=30)
        got: list[int] = []
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def wait() -> None:
                    permit = await Semaphore(name, client=client).acquire(ttl=30)
                    got.append(permit.token)
                    await permit.release()

                tg.start_soon(wait)
                await until_joined(client, name)
                await held.release()
        assert got == [held.token + 1]

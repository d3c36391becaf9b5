"""A waiter cancelled while its claim's create is in flight leaves no claim behind.

A create that was sent cannot be taken back: the server may store the claim after the
caller stopped waiting for the answer, and a delete sent at the cancellation can overtake
it (on another connection) and find nothing. The claim would then sit in the queue, ahead
of later waiters, for as long as its session lives. Here the server stores the claim only
after the caller was cancelled, every time (an unlucky moment of a busy server, made
certain), for a Semaphore's claim and a Lease's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import pytest
from _semaphore_helpers import until_queued

from konductor_sdk import Client, Identity, Lease, Semaphore
from konductor_sdk._kernel.objects import CLAIM, LEASE, SEMAPHORE, KObject, ResourceKind

pytestmark = pytest.mark.anyio


class ClaimCreatesLandLate:
    """A real store whose claim creates reach the server only once their caller was
    cancelled and has done what it does on that (a delete it sends is answered first): the
    request is served in a task of the test's, as a request already sent is served by the
    server, whatever its sender does meanwhile."""

    def __init__(self, inner: Any, tg: anyio.abc.TaskGroup) -> None:
        self._inner = inner
        self._tg = tg
        self.stats = inner.stats
        self.sent = anyio.Event()
        self.cancelled = anyio.Event()
        self.landed = anyio.Event()
        self.deletes: list[str] = []
        self._deleted = anyio.Event()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    async def delete(self, kind: ResourceKind, namespace: str | None, name: str, **kw: Any) -> Any:
        if kind != CLAIM:
            return await self._inner.delete(kind, namespace, name, **kw)
        self.deletes.append(name)
        try:
            return await self._inner.delete(kind, namespace, name, **kw)
        finally:
            self._deleted.set()

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any], **kw: Any
    ) -> KObject:
        if kind != CLAIM:
            created: KObject = await self._inner.create(kind, namespace, body, **kw)
            return created
        answer: list[KObject | BaseException] = []
        answered = anyio.Event()

        async def served() -> None:
            await self.cancelled.wait()
            await anyio.wait_all_tasks_blocked()  # the caller has acted on its cancellation
            if self.deletes:
                await self._deleted.wait()
            try:
                answer.append(await self._inner.create(kind, namespace, body, **kw))
            except BaseException as exc:
                answer.append(exc)
                raise
            finally:
                answered.set()
                self.landed.set()

        self._tg.start_soon(served)
        self.sent.set()
        await answered.wait()
        result = answer[0]
        if isinstance(result, BaseException):
            raise result
        return result


async def _cancel_while_claiming(
    make_client: Callable[..., Client],
    name: str,
    hold: Callable[[Client], Awaitable[Callable[[], Awaitable[None]]]],
    wait: Callable[[Client], Awaitable[Any]],
    kind: ResourceKind,
) -> None:
    base = make_client(holder="holder")
    await base.connect()
    release = await hold(base)
    async with anyio.create_task_group() as tg:
        store = ClaimCreatesLandLate(base.store, tg)
        client = Client(store=store, namespace=base.namespace, identity=Identity("waiter"))  # type: ignore[arg-type]
        try:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as waiting:
                    waiting.start_soon(wait, client)
                    await store.sent.wait()
                    waiting.cancel_scope.cancel()  # the caller gives up; its create is out
                    store.cancelled.set()
                await store.landed.wait()
                # The claim was stored after the cancellation, and is still deleted.
                await until_queued(base, name, lambda claims: not claims, kind=kind)
        finally:
            await client.aclose()
    await release()


async def test_a_semaphore_waiter_cancelled_during_its_claims_create_leaves_no_claim(
    make_client: Callable[..., Client],
) -> None:
    name = "claim-in-flight"

    async def hold(c: Client) -> Callable[[], Awaitable[None]]:
        permit = await Semaphore(name, permits=1, client=c).acquire(ttl=30)
        return permit.release

    async def wait(c: Client) -> None:
        await Semaphore(name, client=c).acquire(ttl=30)

    await _cancel_while_claiming(make_client, name, hold, wait, SEMAPHORE)


async def test_a_lease_candidate_cancelled_during_its_claims_create_leaves_no_claim(
    make_client: Callable[..., Client],
) -> None:
    name = "lease-claim-in-flight"

    async def hold(c: Client) -> Callable[[], Awaitable[None]]:
        held = await Lease(name, ttl=30, client=c).acquire()
        return held.release

    async def wait(c: Client) -> None:
        await Lease(name, ttl=30, client=c).acquire()

    await _cancel_while_claiming(make_client, name, hold, wait, LEASE)

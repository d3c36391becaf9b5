"""A waiter whose session ends at an awkward moment queues again under a fresh one.

The moment tested: the process is frozen (SIGSTOP, a VM pause) between the API server
storing its claim and the process reading the answer, for longer than its session's TTL.
On the thaw the session's renewer may run first and notice the deadline passed, so the
loss callbacks have run before the waiter is even handed to the coordinator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import pytest
from _semaphore_helpers import until_queued

from konductor_sdk import Client, Identity, Semaphore
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import CLAIM, KObject, ResourceKind
from konductor_sdk._kernel.sessions import sessions_of

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]
TTL = 30


class FreezingStore:
    """A real store; after the first claim create lands, the client's clock jumps past its
    session's deadline and the loss is noticed, before the answer is returned."""

    def __init__(self, inner: Any, clock: FakeClock) -> None:
        self._inner = inner
        self._clock = clock
        self.stats = inner.stats
        self.client: Client | None = None
        self.frozen = False
        self.claim_sessions: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any], **kw: Any
    ) -> KObject:
        created: KObject = await self._inner.create(kind, namespace, body, **kw)
        if kind == CLAIM:
            self.claim_sessions.append(created.spec["session"])
            if not self.frozen:
                self.frozen = True
                assert self.client is not None
                self._clock.advance(TTL)
                # What the renewer does first after the thaw: it finds the deadline passed.
                assert sessions_of(self.client).current(TTL) is None
        return created


async def test_a_session_lost_before_its_waiter_was_handed_over_restarts_the_waiter(
    make_client: MakeClient,
) -> None:
    name = "lost-before-handover"
    base = make_client(holder="holder")
    await base.connect()
    clock = FakeClock()
    store = FreezingStore(base.store, clock)
    client = Client(store=store, namespace=base.namespace, identity=Identity("waiter"), clock=clock)  # type: ignore[arg-type]
    store.client = client
    try:
        held = await Semaphore(name, permits=1, client=base).acquire()
        got: list[int] = []
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def wait() -> None:
                    async with Semaphore(name, client=client, ttl=TTL) as permit:
                        got.append(permit.token)

                tg.start_soon(wait)
                # Queued again, under a second session (the first claim is dropped). Judged
                # from the watch alone: its event for the second claim can come before the
                # create's answer reaches the store, and nothing would wake a predicate that
                # waited for the latter.
                queued = await until_queued(
                    base,
                    name,
                    lambda claims: (
                        len(claims) == 1
                        and bool(store.claim_sessions)
                        and claims[0].spec["session"] != store.claim_sessions[0]
                    ),
                )
                await held.release()
        assert got == [held.token + 1]
        assert store.claim_sessions == [store.claim_sessions[0], queued[0].spec["session"]]
        await until_queued(base, name, lambda claims: not claims)
    finally:
        await client.aclose()

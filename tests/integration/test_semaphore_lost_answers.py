"""A waiter whose claim was stored but whose create got no answer (the API server restarted
under it) queues once, and is served, instead of failing its ``acquire()``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import pytest
from _semaphore_helpers import until_queued

from konductor_sdk import APIError, Client, Identity, Semaphore
from konductor_sdk._kernel.objects import CLAIM, KObject, ResourceKind

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]


class LosingStore:
    """A real store whose next claim creates land, but whose callers get no answer."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.stats = inner.stats
        self.lose_answers = 0
        self.claim_creates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any], **kw: Any
    ) -> KObject:
        if kind == CLAIM:
            self.claim_creates += 1
        created: KObject = await self._inner.create(kind, namespace, body, **kw)
        if kind == CLAIM and self.lose_answers > 0:
            self.lose_answers -= 1
            raise APIError("POST claims: connection to the API server failed (test)", status=0)
        return created


async def test_a_claim_whose_create_answer_was_lost_queues_once(make_client: MakeClient) -> None:
    name = "lost-claim-answer"
    base = make_client(holder="holder")
    await base.connect()
    store = LosingStore(base.store)
    client = Client(store=store, namespace=base.namespace, identity=Identity("waiter"))  # type: ignore[arg-type]
    try:
        held = await Semaphore(name, permits=1, client=base).acquire()
        store.lose_answers = 1
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                got: list[int] = []

                async def wait() -> None:
                    async with Semaphore(name, client=client) as permit:
                        got.append(permit.token)

                tg.start_soon(wait)
                queued = await until_queued(base, name, lambda claims: len(claims) == 1)
                assert queued[0].spec["holder"] == "waiter"
                await held.release()
        assert got == [held.token + 1]
        # Sent twice (the retry found it stored), created once: nothing else was queued.
        assert store.claim_creates == 2
        await until_queued(base, name, lambda claims: not claims)
    finally:
        await client.aclose()

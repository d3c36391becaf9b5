"""Barrier arrivals at the edges: an answer lost after the write landed, a caller
cancelled while its write is in flight, and a timeout that a dead party's arrival does not
restart (issue 13.5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _barrier_helpers import eventually, poke, until

from konductor_sdk import APIError, BarrierFailed, BarrierTimeout, Client, Identity
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import BARRIER, CLAIM, KObject
from konductor_sdk._machines import barrier as bs
from konductor_sdk.barrier import Barrier

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]


class FaultyStore:
    """A real store whose barrier status writes can be made to misbehave."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.stats = inner.stats
        self.lose_answers = 0
        """The next status writes land, but their callers get a connection error."""
        self.hold: anyio.Event | None = None
        """The next status write lands, then its answer waits for this event."""
        self.landed = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def replace(self, kind: Any, body: Any, *, subresource: str | None = None) -> KObject:
        written = await self._inner.replace(kind, body, subresource=subresource)
        if kind == BARRIER and subresource == "status":
            if self.lose_answers > 0:
                self.lose_answers -= 1
                raise APIError("PUT barriers/status: connection reset by peer (test)", status=0)
            if self.hold is not None:
                hold, self.hold = self.hold, None
                self.landed.set()
                await hold.wait()
        return written


def faulty_client(base: Client, holder: str) -> tuple[Client, FaultyStore]:
    store = FaultyStore(base.store)
    client = Client(store=store, namespace=base.namespace, identity=Identity(holder))  # type: ignore[arg-type]
    return client, store


async def test_an_arrival_whose_answer_was_lost_counts_once(make_client: MakeClient) -> None:
    base = make_client(holder="base")
    await base.connect()
    client, store = faulty_client(base, "unlucky")
    try:
        store.lose_answers = 1  # the write lands; the answer never comes back
        unlucky = Barrier("lost", expected=3, client=client, party="unlucky")
        await unlucky.arrive()
        obj = await base.store.get(BARRIER, base.namespace, "lost")
        assert (obj.status["arrived"], obj.status["nextIndex"]) == (1, 1)  # not twice
        assert [r["count"] for r in obj.status["recent"]] == [1]
        others = [Barrier("lost", expected=3, client=make_client(f"p{i}")) for i in range(2)]
        ranks: list[int] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for party in [unlucky, *others]:

                    async def wait(p: Barrier = party) -> None:
                        ranks.append(await p.wait_open() if p is unlucky else await p.wait())

                    tg.start_soon(wait)
        assert sorted(ranks) == [0, 1, 2]
        assert unlucky.statistics().opened == 1
    finally:
        await client.aclose()


async def test_a_cancelled_arrival_whose_write_landed_is_withdrawn(
    make_client: MakeClient,
) -> None:
    base = make_client(holder="base")
    await base.connect()
    client, store = faulty_client(base, "impatient")
    try:
        store.hold = hold = anyio.Event()
        impatient = Barrier("cancelled", expected=2, client=client, party="impatient")
        async with anyio.create_task_group() as tg:
            tg.start_soon(impatient.arrive)
            await store.landed.wait()  # the arrival is stored; its caller waits for the answer
            tg.cancel_scope.cancel()
        hold.set()
        obj = await until(base, BARRIER, "cancelled", lambda o: o.status.get("arrived") == 0)
        assert obj.status["nextIndex"] == 1
        assert obj.status["departed"] == [[0, 1]]
        assert impatient.statistics().generation is None
    finally:
        await client.aclose()


async def test_the_timeout_counts_from_the_first_arrival_whoever_left_since(
    make_client: MakeClient,
) -> None:
    """13.5: ``timeoutSeconds`` runs from the generation's first arrival; a party that died
    (its session withdrawn by the operator) does not restart it when the next one arrives."""
    clock = FakeClock()
    client = make_client(holder="job", clock=clock)
    admin = make_client(holder="operator")
    await admin.connect()
    # Two parties of one process with different ttls have different sessions.
    dies = Barrier("clock", expected=2, timeout=10, ttl=600, party="dies", client=client)
    late = Barrier("clock", expected=2, timeout=10, ttl=601, party="late", client=client)
    started = clock.monotonic()

    async def operator_withdraws_dead_session() -> None:
        claims = (await admin.store.list(CLAIM, admin.namespace)).items
        [claim] = [c for c in claims if c.spec["parties"] == ["dies"]]
        obj = await admin.store.get(BARRIER, admin.namespace, "clock")
        new = bs.drop_sessions(obj, frozenset({claim.spec["session"]}), [claim])
        assert new is not None
        await admin.store.replace(BARRIER, obj.with_status(new), subresource="status")

    outcome: dict[str, Any] = {}

    async def wait(party: Barrier) -> None:
        try:
            outcome[party.party or ""] = await party.wait_open()
        except BarrierFailed as exc:
            outcome[party.party or ""] = exc

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await dies.arrive()
            tg.start_soon(wait, dies)
            await operator_withdraws_dead_session()
            await eventually(lambda: "dies" in outcome)
            clock.advance(8)
            await late.arrive()  # the generation's count went 1 -> 0 -> 1
            tg.start_soon(wait, late)
            await eventually(lambda: late.statistics().deadline is not None)
            assert late.statistics().deadline == started + 10  # not 8 + 10
            clock.advance(2.5)
            await poke(admin, BARRIER, "clock")
    assert isinstance(outcome["dies"], BarrierFailed)
    assert "withdrawn" in str(outcome["dies"])
    failed = outcome["late"]
    assert isinstance(failed, BarrierTimeout)
    assert "after its first arrival" in str(failed)
    assert failed.missing == ("dies",)

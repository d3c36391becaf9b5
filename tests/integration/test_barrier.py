"""Barrier on the real API server: opening, generations, reset, leave, cancellation,
dynamic expected, quorum and last call, timeouts judged by waiters, deletion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _barrier_helpers import claimed_parties, eventually, poke, until

from konductor_sdk import BarrierFailed, BarrierTimeout, Client
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import BARRIER, CLAIM
from konductor_sdk._machines import barrier as bs
from konductor_sdk.barrier import Barrier

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]


async def run_parties(
    barriers: list[Barrier], results: dict[int, Any], *, limit: float = 30
) -> None:
    """Every barrier waits in its own task; results[i] is the index or the exception."""

    async def party(i: int) -> None:
        try:
            results[i] = await barriers[i].wait()
        except BarrierFailed as exc:
            results[i] = exc

    with anyio.fail_after(limit):
        async with anyio.create_task_group() as tg:
            for i in range(len(barriers)):
                tg.start_soon(party, i)


async def test_parties_in_separate_clients_open_together_with_unique_ranks(
    make_client: MakeClient,
) -> None:
    barriers = [
        Barrier("open", expected=5, client=make_client(holder=f"p{i}"), party=f"rank-{i}")
        for i in range(5)
    ]
    results: dict[int, Any] = {}
    await run_parties(barriers, results)
    assert sorted(results.values()) == [0, 1, 2, 3, 4]
    await claimed_parties(make_client(), "open", 5)
    status = await barriers[0].status()
    assert status.phase == bs.OPEN
    assert status.arrived == 5
    assert status.generation == 1
    assert {a.party: a.index for a in status.arrivals} == {
        f"rank-{i}": results[i] for i in range(5)
    }
    raw = (await barriers[0]._connect())[0]
    obj = await raw.store.get(BARRIER, raw.namespace, "open")
    assert [h["phase"] for h in obj.status["history"]] == [bs.OPEN]  # opened exactly once


async def test_three_consecutive_generations(make_client: MakeClient) -> None:
    barriers = [
        Barrier("cyclic", expected=3, client=make_client(holder=f"p{i}"), party=f"p{i}")
        for i in range(3)
    ]
    for generation in (1, 2, 3):
        results: dict[int, Any] = {}
        await run_parties(barriers, results)
        assert sorted(results.values()) == [0, 1, 2], generation
        status = await barriers[0].status()
        assert (status.generation, status.phase) == (generation, bs.OPEN)
    for b in barriers:
        assert b.statistics().opened == 3
    client = make_client()
    await client.connect()
    obj = await client.store.get(BARRIER, client.namespace, "cyclic")
    assert [(h["generation"], h["phase"]) for h in obj.status["history"]] == [
        (1, bs.OPEN),
        (2, bs.OPEN),
        (3, bs.OPEN),
    ]
    assert obj.status["previous"]["generation"] == 2


async def test_split_form_and_context_manager(client: Client) -> None:
    first = Barrier("split", expected=2, client=client)
    second = Barrier("split", expected=2, client=client)
    assert await first.arrive() == 1
    assert await first.arrive() == 1  # idempotent while not waited for
    status = await first.status()
    assert status.arrived == 1
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.wait_open)
        async with second as index:
            assert index == 1
    assert (await first.status()).phase == bs.OPEN
    with pytest.raises(RuntimeError, match="arrive"):
        await first.wait_open()


async def test_reset_fails_the_waiters_with_a_clear_error(make_client: MakeClient) -> None:
    waiters = [Barrier("reset", expected=3, client=make_client(holder=f"w{i}")) for i in range(2)]
    observer = make_client(holder="observer")
    results: dict[int, Any] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_parties, waiters, results)
        await observer.connect()
        await until(observer, BARRIER, "reset", lambda o: o.status.get("arrived") == 2)
        assert await Barrier("reset", expected=None, client=observer).reset()
    for result in results.values():
        assert isinstance(result, BarrierFailed)
        assert not isinstance(result, BarrierTimeout)
        assert "Reset" in str(result)
        assert "reset() by observer" in str(result)
    status = await waiters[0].status()
    assert (status.phase, status.reason) == (bs.FAILED, bs.RESET)
    # The next arrivals start a fresh generation that opens normally.
    again: dict[int, Any] = {}
    await run_parties([Barrier("reset", expected=3, client=make_client()) for _ in range(3)], again)
    assert sorted(again.values()) == [0, 1, 2]
    assert (await waiters[0].status()).generation == 2


async def test_leave_removes_the_arrival(make_client: MakeClient) -> None:
    leaver = Barrier("leave", expected=2, client=make_client(holder="leaver"))
    await leaver.arrive()
    assert (await leaver.status()).arrived == 1
    assert await leaver.leave()
    assert not await leaver.leave()
    status = await leaver.status()
    assert (status.arrived, status.phase) == (0, bs.WAITING)
    results: dict[int, Any] = {}
    await run_parties(
        [Barrier("leave", expected=2, client=make_client(holder=f"p{i}")) for i in range(2)],
        results,
    )
    status = await leaver.status()
    assert sorted(results.values()) == [0, 1]
    assert leaver.party not in status.parties


async def test_cancelled_waiter_withdraws_its_arrival(make_client: MakeClient) -> None:
    waiter = Barrier("cancel", expected=2, client=make_client(holder="cancelled"))
    observer = make_client(holder="observer")
    await observer.connect()
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.wait)
        await until(observer, BARRIER, "cancel", lambda o: o.status.get("arrived") == 1)
        tg.cancel_scope.cancel()
    obj = await until(observer, BARRIER, "cancel", lambda o: o.status.get("arrived") == 0)
    assert obj.status["phase"] == bs.WAITING
    assert waiter.statistics().generation is None
    # It did not count: two other parties are needed to open it.
    results: dict[int, Any] = {}
    await run_parties(
        [Barrier("cancel", expected=2, client=make_client(holder=f"p{i}")) for i in range(2)],
        results,
    )
    assert sorted(results.values()) == [0, 1]


async def test_lowering_expected_mid_wait_opens_at_once(make_client: MakeClient) -> None:
    waiters = [Barrier("lower", expected=5, client=make_client(holder=f"w{i}")) for i in range(3)]
    admin = Barrier("lower", expected=None, client=make_client(holder="admin"))
    results: dict[int, Any] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_parties, waiters, results)
        observer = make_client(holder="observer")
        await observer.connect()
        await until(observer, BARRIER, "lower", lambda o: o.status.get("arrived") == 3)
        await admin.set_expected(3)
    assert sorted(results.values()) == [0, 1, 2]
    status = await admin.status()
    assert (status.expected, status.phase, status.arrived) == (3, bs.OPEN, 3)


async def test_raising_expected_mid_wait_needs_more_parties(make_client: MakeClient) -> None:
    waiter = Barrier("raise", expected=2, client=make_client(holder="w0"))
    admin = Barrier("raise", expected=None, client=make_client(holder="admin"))
    await waiter.arrive()
    await admin.set_expected(3)
    second = Barrier("raise", expected=2, client=make_client(holder="w1"))
    await second.arrive()
    status = await admin.status()
    assert (status.phase, status.arrived, status.expected) == (bs.WAITING, 2, 3)
    results: dict[int, Any] = {}
    third = Barrier("raise", expected=2, client=make_client(holder="w2"))
    await run_parties([waiter, second, third], results)
    assert sorted(results.values()) == [0, 1, 2]


async def test_set_expected_below_quorum_is_rejected_before_writing(client: Client) -> None:
    b = Barrier("quorum-guard", expected=4, quorum=3, client=client)
    await b.create()
    before = await b.status()
    with pytest.raises(ValueError, match=r"spec\.quorum \(3\)"):
        await b.set_expected(2)
    assert await b.status() == before


async def test_quorum_with_last_call_waits_for_the_window_on_the_waiters_clock(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()
    spec = {"expected": 4, "quorum": 2, "last_call": 30, "ttl": 600}
    waiters = [
        Barrier("lastcall", **spec, client=make_client(holder=f"w{i}", clock=clock))  # type: ignore[arg-type]
        for i in range(2)
    ]
    observer = make_client(holder="observer")
    results: dict[int, Any] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_parties, waiters, results)
        await observer.connect()
        obj = await until(observer, BARRIER, "lastcall", lambda o: o.status.get("arrived") == 2)
        assert obj.status["quorumReachedAt"]
        # Each waiter times the window from when it saw quorum, on its own clock.
        seen = clock.monotonic()
        await eventually(lambda: all(w.statistics().deadline is not None for w in waiters))
        assert [w.statistics().deadline for w in waiters] == [seen + 30, seen + 30]
        # 29 s on the waiters' clock: the window is still open, a late party gets in.
        clock.advance(29)
        await poke(observer, BARRIER, "lastcall")
        late = Barrier("lastcall", **spec, client=make_client(holder="late", clock=clock))  # type: ignore[arg-type]
        assert await late.arrive() == 1  # generation 1 still takes arrivals

        async def late_waits() -> None:
            results[2] = await late.wait_open()

        tg.start_soon(late_waits)
        clock.advance(2)  # 31 s: past the window
        await poke(observer, BARRIER, "lastcall")
    status = await late.status()
    assert (status.phase, status.arrived, status.generation) == (bs.OPEN, 3, 1)
    assert sorted(results.values()) == [0, 1, 2]


async def test_quorum_without_last_call_opens_at_quorum(make_client: MakeClient) -> None:
    results: dict[int, Any] = {}
    await run_parties(
        [
            Barrier("quorum", expected=5, quorum=2, client=make_client(holder=f"p{i}"))
            for i in range(2)
        ],
        results,
    )
    assert sorted(results.values()) == [0, 1]


async def test_timeout_is_detected_by_waiters_and_names_the_missing_party(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()
    names = ["rank-0", "rank-1", "rank-2"]
    parties = [
        Barrier(
            "timeout",
            expected=3,
            timeout=10,
            ttl=600,
            party=name,
            client=make_client(holder=name, clock=clock),
        )
        for name in names
    ]
    first: dict[int, Any] = {}
    await run_parties(parties, first)  # generation 1: everyone; rank-2 is then gone
    observer = make_client(holder="observer")
    await observer.connect()
    results: dict[int, Any] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_parties, parties[:2], results)
        # Both arrived (their arrive() returns once their arrival claims exist).
        await eventually(lambda: all(p.statistics().generation == 2 for p in parties[:2]))
        clock.advance(11)  # no operator anywhere: the waiters' own stopwatches run out
        await poke(observer, BARRIER, "timeout")
    for result in results.values():
        assert isinstance(result, BarrierTimeout)
        assert result.missing == ("rank-2",)
        assert set(result.arrived) == {"rank-0", "rank-1"}
        assert "missing: rank-2" in str(result)
        assert "timeoutSeconds=10" in str(result)
    status = await parties[0].status()
    assert (status.phase, status.reason, status.missing) == (bs.FAILED, bs.TIMEOUT, ("rank-2",))


async def test_a_waiter_whose_arrival_is_reaped_is_told(make_client: MakeClient) -> None:
    waiter = Barrier("reaped", expected=2, client=make_client(holder="frozen"), party="frozen")
    operator = make_client(holder="operator")
    await operator.connect()
    ns = operator.namespace

    async def reap() -> None:
        # What the operator does when a session dies: withdraw its arrival claims' ranges.
        await eventually(lambda: waiter.statistics().generation == 1)
        claims = (await operator.store.list(CLAIM, ns)).items
        [claim] = [c for c in claims if c.spec["target"]["name"] == "reaped"]
        assert claim.spec["parties"] == ["frozen"]
        obj = await operator.store.get(BARRIER, ns, "reaped")
        new = bs.drop_sessions(obj, frozenset({claim.spec["session"]}), claims)
        assert new is not None
        await operator.store.replace(BARRIER, obj.with_status(new), subresource="status")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reap)
            with pytest.raises(BarrierFailed, match="frozen was withdrawn"):
                await waiter.wait()
    status = await waiter.status()
    assert (status.arrived, status.departed, status.next_index) == (0, ((0, 1),), 1)


async def test_deleting_the_barrier_fails_its_waiters(make_client: MakeClient) -> None:
    waiter = Barrier("deleted", expected=2, client=make_client(holder="w"))
    admin = Barrier("deleted", expected=None, client=make_client(holder="admin"))
    observer = make_client(holder="observer")
    await observer.connect()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:

            async def delete_when_arrived() -> None:
                await until(observer, BARRIER, "deleted", lambda o: o.status.get("arrived") == 1)
                assert await admin.delete()

            tg.start_soon(delete_when_arrived)
            with pytest.raises(BarrierFailed, match="deleted"):
                await waiter.wait()
    assert not await admin.delete()


async def test_joining_a_missing_barrier_without_expected_fails(client: Client) -> None:
    from konductor_sdk import NotFoundError

    with pytest.raises(NotFoundError):
        await Barrier("nope", expected=None, client=client).arrive()


class SlowListStore:
    """Delegates to a real store, but a list of barriers returns only when ``gate`` is set
    (its answer reflecting the moment it was asked): a shared watch still syncing."""

    def __init__(self, inner: Any, gate: anyio.Event) -> None:
        self._inner = inner
        self._gate = gate
        self.stats = inner.stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def list(self, kind: Any, namespace: Any, **kwargs: Any) -> Any:
        listed = await self._inner.list(kind, namespace, **kwargs)
        if kind == BARRIER:
            await self._gate.wait()
        return listed


async def test_a_watch_listed_before_the_arrival_does_not_make_it_look_removed(
    make_client: MakeClient,
) -> None:
    base = make_client(holder="base")
    await base.connect()
    gate = anyio.Event()
    from konductor_sdk import Identity

    slow = Client(
        store=SlowListStore(base.store, gate),  # type: ignore[arg-type]
        namespace=base.namespace,
        identity=Identity("slow"),
    )
    try:
        party = Barrier("stale", expected=2, client=slow)
        await party.create()
        results: list[int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow.watch, BARRIER, slow.namespace)  # lists now, answers later
            await party.arrive()  # written while the watch is still syncing
            gate.set()  # the watch syncs with a list older than the arrival

            async def wait() -> None:
                results.append(await party.wait_open())

            tg.start_soon(wait)
            other = Barrier("stale", expected=2, client=make_client(holder="other"))
            results.append(await other.wait())
        assert sorted(results) == [0, 1]
    finally:
        await slow.aclose()

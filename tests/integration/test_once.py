"""Once on the real API server: one runner among concurrent callers, outcomes shared,
failures propagated, a dead or lost runner replaced, cancellation releasing the claim."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _barrier_helpers import until

from konductor_sdk import Client, OnceFailed
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import ONCE, SESSION
from konductor_sdk._kernel.sessions import sessions_of
from konductor_sdk._machines import once as os_
from konductor_sdk.once import Once

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]


def running(obj: Any) -> bool:
    return bool(obj.status.get("phase") == os_.RUNNING)


async def test_exactly_one_runner_among_concurrent_callers(make_client: MakeClient) -> None:
    clients = [make_client(holder=f"proc-{i}") for i in range(6)]
    observer = make_client(holder="observer")
    runs: list[str] = []
    release = anyio.Event()
    results: list[Any] = []

    def make_fn(who: str) -> Callable[[], Any]:
        async def fn() -> dict[str, Any]:
            runs.append(who)
            await release.wait()  # everyone else is calling run() meanwhile
            return {"ran_by": who, "rows": [1, 2, 3]}

        return fn

    async def caller(i: int) -> None:
        once = Once("init-db", client=clients[i % 6])
        results.append(await once.run(make_fn(f"caller-{i}")))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(18):
                tg.start_soon(caller, i)
            await observer.connect()
            await until(observer, ONCE, "init-db", running)
            release.set()
    assert len(runs) == 1
    assert results == [{"ran_by": runs[0], "rows": [1, 2, 3]}] * 18
    status = await Once("init-db", client=observer).status()
    assert (status.phase, status.attempts, status.runner) == (os_.DONE, 1, None)
    # Later callers get the recorded outcome without running anything.
    assert await Once("init-db", client=observer).run(make_fn("late")) == results[0]
    assert len(runs) == 1


async def test_a_failure_reaches_every_caller(make_client: MakeClient) -> None:
    async def boom() -> None:
        raise ValueError("disk full")

    runner = Once("fails", client=make_client(holder="runner"))
    with pytest.raises(OnceFailed, match="ValueError: disk full") as info:
        await runner.run(boom)
    assert isinstance(info.value.__cause__, ValueError)

    async def never() -> None:
        raise AssertionError("must not run again")

    with pytest.raises(OnceFailed, match="failed in runner: ValueError: disk full"):
        await Once("fails", client=make_client(holder="other")).run(never)
    status = await runner.status()
    assert (status.phase, status.error_type, status.error_message) == (
        os_.FAILED,
        "ValueError",
        "disk full",
    )


async def test_a_result_that_is_not_json_fails_the_once(client: Client) -> None:
    async def weird() -> object:
        return object()

    with pytest.raises(OnceFailed, match="TypeError"):
        await Once("weird", client=client).run(weird)
    assert (await Once("weird", client=client).status()).phase == os_.FAILED


async def claim_as_dead_runner(client: Client, name: str, ttl: int) -> str:
    """Claim ``name`` as a runner of ``client`` that then dies: its session is left to
    expire (kept on close, never renewed again). Returns the session's name."""
    await client.connect()
    session = await sessions_of(client).get(ttl)
    entry = {"session": session.name, "creator": await client.whoami(), "holder": "ghost"}
    await client.store.create(ONCE, client.namespace, {"metadata": {"name": name}, "spec": {}})
    await update_status(
        client,
        ONCE,
        client.namespace,
        name,
        lambda o: os_.claim(o.spec, o.status, key="ghost#1", entry=entry, now="t0"),
    )
    session.holds = 1  # as if something were still held: the session outlives the client
    await client.aclose()  # ... and nobody renews it any more: a crashed process
    return session.name


async def test_a_dead_runner_is_taken_over_when_its_session_expires(
    make_client: MakeClient,
) -> None:
    """A runner claimed and then died; a caller of the same user judges its session
    expired on its own clock (renewCount unchanged for ttlSeconds), with no operator, and
    runs the function itself."""
    session = await claim_as_dead_runner(make_client(holder="ghost"), "crash", ttl=2)

    async def work() -> str:
        return "done by survivor"

    survivor = Once("crash", client=make_client(holder="survivor"))
    status = await survivor.status()
    assert (status.phase, status.runner, status.runner_session) == (
        os_.RUNNING,
        "ghost",
        session,
    )
    with anyio.fail_after(30):
        assert await survivor.run(work) == "done by survivor"
    status = await survivor.status()
    assert (status.phase, status.attempts, status.completed_by) == (os_.DONE, 2, "survivor")
    assert survivor.statistics().took_over == 1


async def test_a_runner_whose_session_is_gone_is_taken_over_at_once(
    make_client: MakeClient,
) -> None:
    client = make_client(holder="ghost")
    session = await claim_as_dead_runner(client, "gone", ttl=3600)
    admin = make_client(holder="admin")
    await admin.connect()
    await admin.store.delete(SESSION, admin.namespace, session)  # the operator, or GC

    async def work() -> str:
        return "after the session ended"

    with anyio.fail_after(30):
        assert await Once("gone", client=admin).run(work) == "after the session ended"


async def test_a_runner_whose_session_is_lost_stops_and_runs_again(
    make_client: MakeClient,
) -> None:
    """The runner's session deadline passes while it runs: the function is cancelled (or,
    if the deadline passed before it started, the claim is given back unrun), and the
    Once is claimed again under a fresh session; only that run records the outcome."""
    clock = FakeClock()
    runner = Once("lost", client=make_client(holder="runner", clock=clock), ttl=10)
    observer = make_client(holder="observer")
    advanced = anyio.Event()
    cancelled = anyio.Event()
    runs: list[bool] = []  # whether each run started after the deadline passed

    async def work() -> str:
        runs.append(advanced.is_set())
        if not advanced.is_set():
            try:
                await anyio.sleep_forever()
            finally:
                cancelled.set()
        return "after the deadline"

    async def lose_the_session() -> None:
        await observer.connect()
        await until(observer, ONCE, "lost", running)
        clock.advance(10)  # past the runner's session deadline: it must stop at once
        advanced.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lose_the_session)
            assert await runner.run(work) == "after the deadline"
    assert runs[-1] is True
    assert runs == [False, True] or runs == [True]  # cancelled, or never started
    assert cancelled.is_set() == (len(runs) == 2)
    assert (await runner.status()).attempts == 2


async def test_a_cancelled_runner_releases_its_claim(make_client: MakeClient) -> None:
    runner = Once("cancel", client=make_client(holder="runner"))
    observer = make_client(holder="observer")

    async def forever() -> None:
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run, forever)
        await observer.connect()
        await until(observer, ONCE, "cancel", running)
        tg.cancel_scope.cancel()
    obj = await until(observer, ONCE, "cancel", lambda o: o.status.get("phase") == os_.PENDING)
    assert obj.status["holders"] == {}

    async def quick() -> int:
        return 7

    assert await Once("cancel", client=observer).run(quick) == 7


async def test_reset_runs_the_function_again(client: Client) -> None:
    once = Once("reset", client=client)
    calls = []

    async def fn() -> int:
        calls.append(1)
        return len(calls)

    assert await once.run(fn) == 1
    assert await once.run(fn) == 1
    assert await once.reset()
    assert not await once.reset()  # nothing left to forget
    assert await once.run(fn) == 2
    assert (await once.status()).attempts == 2

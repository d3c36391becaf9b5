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
from konductor_sdk._kernel.objects import ONCE
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


async def test_a_dead_runner_is_taken_over_after_its_ttl(make_client: MakeClient) -> None:
    """A runner claimed and then died (its entry is never renewed); a caller judges it
    expired on its own clock, with no operator, and runs the function itself."""
    ghost = make_client(holder="ghost")
    await ghost.connect()
    await ghost.store.create(ONCE, ghost.namespace, {"metadata": {"name": "crash"}, "spec": {}})
    entry = {"holder": "ghost", "ttlSeconds": 1, "renewCount": 0, "acquiredAt": "t0"}
    await update_status(
        ghost,
        ONCE,
        ghost.namespace,
        "crash",
        lambda o: os_.claim(o.spec, o.status, key="ghost#1", entry=entry, now="t0"),
    )

    async def work() -> str:
        return "done by survivor"

    survivor = Once("crash", client=make_client(holder="survivor"))
    with anyio.fail_after(30):
        assert await survivor.run(work) == "done by survivor"
    status = await survivor.status()
    assert (status.phase, status.attempts, status.completed_by) == (os_.DONE, 2, "survivor")
    assert survivor.statistics().took_over == 1


async def test_a_runner_that_loses_its_claim_is_cancelled_and_gets_the_new_outcome(
    make_client: MakeClient,
) -> None:
    admin = make_client(holder="admin")
    # A short TTL: the runner renews every second and so notices the loss quickly.
    first = Once("lost", client=make_client(holder="first"), ttl=3)
    cancelled = anyio.Event()

    async def slow() -> str:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return "unreachable"

    async def replace_runner() -> None:
        # What a takeover looks like to the runner: its entry replaced by another's claim.
        await admin.connect()
        await until(admin, ONCE, "lost", running)
        other = {"holder": "other", "ttlSeconds": 30, "renewCount": 0, "acquiredAt": "t1"}

        def take(o: Any) -> Any:
            current = os_.runner(o.status)
            assert current is not None
            takeover = (current[0], os_.marker(current[1]))
            return os_.claim(
                o.spec, o.status, key="other#1", entry=other, now="t1", takeover=takeover
            )

        await update_status(admin, ONCE, admin.namespace, "lost", take)
        await cancelled.wait()  # the first runner noticed (at its next renewal) and stopped
        await update_status(
            admin,
            ONCE,
            admin.namespace,
            "lost",
            lambda o: os_.complete(
                o.spec,
                o.status,
                key="other#1",
                attempt=2,
                result='"other won"',
                holder="other",
                now="t2",
            ),
        )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(replace_runner)
            assert await first.run(slow) == "other won"
    assert first.statistics().ran == 1


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

"""``koncli run`` end to end: the installed ``koncli`` as a subprocess, the real API server.

The child is a small Python program that asks the API server who holds the semaphore and
prints it, so "held exactly while the child runs" is checked from the child's own point of
view; "released" is checked on the server after koncli exits. Processes are sequenced by
lines they print and by watch events, never by sleeping.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from _cli_support import KONCLI, Result, grants, koncli, koncli_env, waiting
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import MUTEX, SEMAPHORE, KObject
from konductor_sdk.mutex import Mutex
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


CHILD = r"""
import json, os, signal, sys, time
import anyio
from konductor_sdk import Client
from konductor_sdk._kernel.objects import SEMAPHORE

mode, name = sys.argv[1], sys.argv[2]

def on_term(*_):
    print("child: got SIGTERM", flush=True)
    sys.exit(143)

signal.signal(signal.SIGTERM, on_term)

async def holders():
    async with Client(namespace=os.environ["KONDUCTOR_NAMESPACE"]) as client:
        obj = await client.store.get(SEMAPHORE, client.namespace, name)
        # Grants are keyed by first slot; a permit's key is "slot#token".
        return sorted(f"{s}#{e['token']}" for s, e in (obj.status.get("holders") or {}).items())

holds = json.loads(os.environ["KONDUCTOR_HOLDS"])
print(json.dumps({"holders": anyio.run(holders, backend="asyncio"), "holds": holds}), flush=True)
if mode == "exit":
    sys.exit(int(sys.argv[3]))
if mode == "crash":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "append":  # record an interval in a shared file, for the exclusion check
    with open(sys.argv[3], "a") as log:
        log.write(f"start {os.getpid()}\n")
        log.flush()
        time.sleep(0.2)
        log.write(f"end {os.getpid()}\n")
    sys.exit(0)
print("ready", flush=True)
while True:
    time.sleep(60)
"""


@pytest.fixture
def env(kubeconfig: Path, namespace: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a koncli process: this test's cluster and namespace, no config."""
    return koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)


@pytest.fixture
def child(tmp_path: Path) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return [sys.executable, str(path)]


@pytest.fixture
async def sdk(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="test-sdk")
    ) as client:
        yield client


@attrs.define
class Running:
    process: Process
    lines: BufferedByteReceiveStream

    async def line(self) -> str:
        with anyio.fail_after(60):
            return (await self.lines.receive_until(b"\n", 1 << 20)).decode()

    async def finish(self) -> Result:
        with anyio.fail_after(60):
            code = await self.process.wait()
            rest = b""
            while True:
                try:
                    rest += await self.lines.receive()
                except anyio.EndOfStream:
                    break
            assert self.process.stderr is not None
            err = b""
            async for chunk in self.process.stderr:
                err += chunk
        return Result(code, rest.decode(), err.decode())


@asynccontextmanager
async def background(env: dict[str, str], *args: str) -> AsyncIterator[Running]:
    async with await anyio.open_process(
        [KONCLI, *args], env=env, stdin=subprocess.DEVNULL
    ) as process:
        assert process.stdout is not None
        try:
            yield Running(process, BufferedByteReceiveStream(process.stdout))
        finally:
            if process.returncode is None:
                process.kill()


async def holders(sdk: Client, kind: Any, name: str) -> dict[str, Any]:
    """The grants of ``kind``/``name`` by key (``slot#token``)."""
    return grants(await sdk.store.get(kind, sdk.namespace, name))


async def until_queued(sem: Semaphore) -> None:
    """Wait (on the SDK's watches, bounded) until someone is queued on ``sem``."""
    with anyio.fail_after(30):
        async for status in sem.changes():
            if status.waiters:
                return


async def until(sdk: Client, kind: Any, name: str, check: Callable[[KObject], bool]) -> None:
    """Wait (on the watch, bounded) until ``check(obj)`` holds."""
    watch = await sdk.watch(kind, sdk.namespace)
    with anyio.fail_after(30):
        while True:
            changed = watch.next_change(name)
            obj = watch.get(name)
            if obj is not None and check(obj):
                return
            await changed.wait()


async def test_run_holds_exactly_while_the_child_runs(
    env: dict[str, str], child: list[str], sdk: Client
) -> None:
    created = await koncli(env, "semaphore", "create", "gpu", "--permits", "1", "-o", "json")
    assert created.code == 0, created.stderr
    assert json.loads(created.stdout)["limit"] == 1

    for exit_code in (0, 17):
        done = await koncli(
            env, "run", "--semaphore", "gpu", "--", *child, "exit", "gpu", str(exit_code)
        )
        assert done.code == exit_code, done.stderr
        seen = json.loads(done.stdout.splitlines()[0])
        hold = seen["holds"][0]
        assert (hold["kind"], hold["name"]) == ("semaphore", "gpu")
        assert seen["holders"] == [hold["key"]]  # the child's own permit, nobody else's
        assert await holders(sdk, SEMAPHORE, "gpu") == {}  # released on exit


async def test_run_releases_when_the_child_crashes(
    env: dict[str, str], child: list[str], sdk: Client
) -> None:
    await Semaphore("gpu", permits=1, client=sdk).create()
    done = await koncli(env, "run", "-q", "--semaphore", "gpu", "--", *child, "crash", "gpu")
    assert done.code == 128 + signal.SIGKILL
    assert len(json.loads(done.stdout.splitlines()[0])["holders"]) == 1
    assert await holders(sdk, SEMAPHORE, "gpu") == {}


async def test_sigterm_to_koncli_is_forwarded_then_everything_is_released(
    env: dict[str, str], child: list[str], sdk: Client
) -> None:
    await Semaphore("gpu", permits=1, client=sdk).create()
    async with background(
        env, "run", "--semaphore", "gpu", "--mutex", "m", "--", *child, "wait", "gpu"
    ) as run:
        seen = json.loads(await run.line())
        assert len(seen["holds"]) == 2
        assert await run.line() == "ready"
        run.process.send_signal(signal.SIGTERM)
        done = await run.finish()
    assert done.code == 143, done.stderr
    assert "child: got SIGTERM" in done.stdout
    assert await holders(sdk, SEMAPHORE, "gpu") == {}
    assert await holders(sdk, MUTEX, "m") == {}


async def test_a_lost_permit_stops_the_child_and_exits_5(
    env: dict[str, str], child: list[str], sdk: Client
) -> None:
    sem = Semaphore("gpu", permits=1, client=sdk)
    await sem.create()
    async with background(env, "run", "--semaphore", "gpu", "--", *child, "wait", "gpu") as run:
        key = json.loads(await run.line())["holds"][0]["key"]
        assert await run.line() == "ready"
        assert await sem.force_release(key) == (key,)  # an admin takes the permit away
        done = await run.finish()
    assert done.code == 5, done.stderr
    assert "child: got SIGTERM" in done.stdout
    assert done.stderr.count("ended while held") == 1, done.stderr  # reported once
    assert done.stderr.endswith(
        "ended while held: the grant was removed (its session was reaped, "
        "or it was force-released); stopped the command with SIGTERM\n"
    )


async def test_timeout_and_sigint_while_waiting_leave_the_queue_and_release(
    env: dict[str, str], sdk: Client
) -> None:
    sem = Semaphore("gpu", permits=1, client=sdk)
    await sem.create()
    await Mutex("m", client=sdk).create()
    permit = await sem.acquire(ttl=60)  # the semaphore is full
    try:
        # Global order takes the mutex first, then queues for the semaphore.
        args = ("run", "--semaphore", "gpu", "--mutex", "m")
        timed_out = await koncli(env, *args, "--timeout", "1", "--", "true")
        assert timed_out.code == 3, timed_out.stderr
        assert "timed out" in timed_out.stderr
        assert await holders(sdk, MUTEX, "m") == {}
        assert await waiting(sdk, SEMAPHORE, "gpu") == []

        async with background(env, *args, "--", "true") as run:
            await until(sdk, MUTEX, "m", lambda o: bool(o.status.get("holders")))
            await until_queued(sem)
            run.process.send_signal(signal.SIGINT)
            done = await run.finish()
        assert done.code == 130, done.stderr
        assert await holders(sdk, MUTEX, "m") == {}
        assert await waiting(sdk, SEMAPHORE, "gpu") == []
        assert list(await holders(sdk, SEMAPHORE, "gpu")) == [permit.key]
    finally:
        await permit.release()


async def test_concurrent_runs_exclude_each_other_without_deadlock(
    env: dict[str, str], child: list[str], sdk: Client, tmp_path: Path
) -> None:
    # Two mutexes named in opposite orders: the global acquisition order prevents the
    # classic deadlock; mutual exclusion shows as non-overlapping intervals in the log.
    await Semaphore("gpu", permits=1, client=sdk).create()
    log = tmp_path / "intervals.log"
    flag_orders = [("a", "b"), ("b", "a"), ("a", "b")]
    results: list[Result] = []

    async def one(first: str, second: str) -> None:
        results.append(
            await koncli(
                env,
                "run",
                "-q",
                "--mutex",
                first,
                "--mutex",
                second,
                "--semaphore",
                "gpu",
                "--",
                *child,
                "append",
                "gpu",
                str(log),
            )
        )

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for first, second in flag_orders:
                tg.start_soon(one, first, second)
    assert [r.code for r in results] == [0, 0, 0], [r.stderr for r in results]
    for r in results:
        assert len(json.loads(r.stdout.splitlines()[0])["holders"]) == 1
    events = log.read_text().split("\n")[:-1]
    assert len(events) == 6
    for i in range(0, 6, 2):  # start/end pairs of the same process, never interleaved
        assert events[i].split()[0] == "start"
        assert events[i + 1] == f"end {events[i].split()[1]}"


async def test_run_waits_for_a_gate_before_starting(env: dict[str, str], sdk: Client) -> None:
    from konductor_sdk.gate import Condition, Gate

    gate = Gate("deploy-window", client=sdk)
    await gate.create([Condition.external("approved")])
    closed = await koncli(env, "run", "--gate", "deploy-window", "--timeout", "1", "--", "true")
    assert closed.code == 3, closed.stderr
    await gate.mark("approved")
    opened = await koncli(env, "run", "--gate", "deploy-window", "--", "sh", "-c", "exit 4")
    assert opened.code == 4, opened.stderr  # the command ran; its own code came back


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "crds" / "barrier.yaml").exists(),
    reason="the Barrier CRD is not in crds/ yet",
)
async def test_run_with_a_barrier_starts_all_parties_together(
    env: dict[str, str], child: list[str], sdk: Client
) -> None:
    await Semaphore("gpu", permits=2, client=sdk).create()
    lone = await koncli(env, "run", "--barrier", "stage1:2", "--timeout", "1", "--", "true")
    assert lone.code == 3, lone.stderr  # one party of two: never opens

    results: list[Result] = []

    async def party() -> None:
        results.append(
            await koncli(
                env,
                "run",
                "-q",
                "--barrier",
                "stage1",
                "--semaphore",
                "gpu",
                "--",
                *child,
                "exit",
                "gpu",
                "0",
            )
        )

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(party)
            tg.start_soon(party)
    assert [r.code for r in results] == [0, 0], [r.stderr for r in results]
    indices = sorted(
        next(
            h["index"]
            for h in json.loads(r.stdout.splitlines()[0])["holds"]
            if h["kind"] == "barrier"
        )
        for r in results
    )
    assert indices == [0, 1]


async def test_sigint_during_a_detached_acquire_leaves_the_queue(
    env: dict[str, str], sdk: Client
) -> None:
    sem = Semaphore("gpu", permits=1, client=sdk)
    await sem.create()
    permit = await sem.acquire(ttl=60)
    try:
        async with background(env, "semaphore", "acquire", "gpu", "--ttl", "60") as queued:
            await until_queued(sem)
            queued.process.send_signal(signal.SIGINT)
            done = await queued.finish()
        assert done.code == 130, done.stderr
        assert done.stdout == ""  # no key printed: nothing was acquired
        assert await waiting(sdk, SEMAPHORE, "gpu") == []
        assert list(await holders(sdk, SEMAPHORE, "gpu")) == [permit.key]
    finally:
        await permit.release()

"""Progress of a waiting ``koncli semaphore acquire`` on a terminal: its place in the queue and
who holds, redrawn when the queue changes (the installed ``koncli``, stderr on a pty).

Sequenced by what the processes print and by the SDK's watches, never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest
from _cli_support import KONCLI, koncli_env

from konductor_sdk import Client, Identity
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sdk(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="test-sdk")
    ) as client:
        yield client


class Terminal:
    """The master side of a pty: what the process wrote to it, read as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self._grew = anyio.Event()

    async def pump(self) -> None:
        while True:
            try:
                chunk = await anyio.to_thread.run_sync(os.read, self.fd, 65536)
            except OSError:  # EIO: every writer closed its end
                chunk = b""
            self.text += chunk.decode(errors="replace")
            self._grew.set()
            self._grew = anyio.Event()
            if not chunk:
                return

    async def wait_for(self, wanted: str) -> None:
        with anyio.fail_after(60):
            while wanted not in self.text:
                await self._grew.wait()


async def read_all(stream: anyio.abc.ByteReceiveStream | None) -> str:
    assert stream is not None
    data = b""
    with contextlib.suppress(anyio.EndOfStream):
        while True:
            data += await stream.receive()
    return data.decode()


async def until_queued(sem: Semaphore, count: int) -> None:
    with anyio.fail_after(30):
        async with contextlib.aclosing(sem.changes()) as changes:
            async for status in changes:
                if len(status.waiters) == count:
                    return


async def _acquire_in(scope: anyio.CancelScope, sem: Semaphore) -> None:
    with scope:
        await sem.acquire(ttl=60)


async def test_a_waiter_on_a_terminal_shows_its_place_and_the_holder(
    kubeconfig: Path, namespace: str, tmp_path: Path, sdk: Client
) -> None:
    sem = Semaphore("gpu", permits=1, client=sdk)
    await sem.create()
    permit = await sem.acquire(ttl=60)
    env = koncli_env(
        kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace, TERM="xterm", COLUMNS="300"
    )
    master, slave = pty.openpty()
    terminal = Terminal(master)
    try:
        async with anyio.create_task_group() as tg:
            ahead = anyio.CancelScope()
            tg.start_soon(_acquire_in, ahead, sem)  # another waiter, first in the queue
            await until_queued(sem, 1)
            async with await anyio.open_process(
                [KONCLI, "semaphore", "acquire", "gpu", "--ttl", "60"],
                env=env,
                stdin=subprocess.DEVNULL,
                stderr=slave,
            ) as process:
                os.close(slave)
                slave = -1
                tg.start_soon(terminal.pump)
                await terminal.wait_for("position 2 of 2 in the queue")
                assert f"semaphore {namespace}/gpu" in terminal.text
                assert "1/1 in use, held by test-sdk" in terminal.text
                ahead.cancel()  # the waiter ahead gives up: the line is redrawn
                await terminal.wait_for("position 1 of 1 in the queue")
                await permit.release()
                assert process.stdout is not None
                with anyio.fail_after(60):
                    key = (await process.stdout.receive()).decode().strip()
                    assert await process.wait() == 0
            assert key.endswith("#2")  # the second grant's token: koncli's own permit
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
        if slave != -1:
            os.close(slave)
        if not permit.released:
            await permit.release()


async def test_a_waiter_into_a_pipe_logs_its_progress_and_with_quiet_prints_none(
    kubeconfig: Path, namespace: str, tmp_path: Path, sdk: Client
) -> None:
    sem = Semaphore("gpu", permits=1, client=sdk)
    await sem.create()
    env = koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)
    for args in ((), ("--quiet",)):
        permit = await sem.acquire(ttl=60)
        command = [KONCLI, "semaphore", "acquire", "gpu", "--ttl", "60", *args]
        async with await anyio.open_process(command, env=env, stdin=subprocess.DEVNULL) as proc:
            await until_queued(sem, 1)  # koncli is waiting behind the SDK's permit
            await permit.release()
            with anyio.fail_after(60):
                assert await proc.wait() == 0
                err = await read_all(proc.stderr)
                key = (await read_all(proc.stdout)).strip()
        if args:
            assert "waiting for" not in err
        else:  # in a pipe (a pod's log): a plain log line, not a redrawn one
            assert "koncli: waiting for semaphore" in err, err
            assert "position 1 of 1" in err, err
            assert "\x1b" not in err
        # --quiet also drops the "acquired ..., release with ..." line; the key is on stdout.
        assert ("koncli: acquired semaphore" in err) != bool(args), err
        # Released, koncli's grant leaves nothing queued behind (its claim went with it):
        # the next acquire, the loop's second round, is granted at once.
        assert await sem.force_release(key) == (key,)
        assert (await sem.status()).waiters == ()


class Stream:
    """A process's stderr as it comes (the progress lines are how the test knows it waits)."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.text = ""

    async def wait_for(self, wanted: str) -> None:
        with anyio.fail_after(60):
            while wanted not in self.text:
                try:
                    self.text += (await self.stream.receive()).decode(errors="replace")
                except anyio.EndOfStream:
                    raise AssertionError(f"{wanted!r} never came; stderr: {self.text}") from None

    async def rest(self) -> str:
        self.text += await read_all(self.stream)
        return self.text


async def test_a_waiting_lease_barrier_or_gate_logs_who_holds_or_what_is_missing(
    kubeconfig: Path, namespace: str, tmp_path: Path, sdk: Client
) -> None:
    from konductor_sdk.barrier import Barrier
    from konductor_sdk.gate import Condition, Gate
    from konductor_sdk.lease import Lease

    env = koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)

    async def koncli(*args: str) -> anyio.abc.Process:
        return await anyio.open_process([KONCLI, *args], env=env, stdin=subprocess.DEVNULL)

    # A lease another holder has: who holds it, until it is released.
    lease = Lease("db", ttl=60, client=sdk)
    held = await lease.acquire()
    async with await koncli("lease", "acquire", "db", "--ttl", "60") as proc:
        err = Stream(proc.stderr)
        await err.wait_for(f"koncli: waiting for lease {namespace}/db: held by test-sdk (token ")
        await held.release()
        with anyio.fail_after(60):
            assert await proc.wait() == 0
        assert "koncli: acquired lease" in await err.rest()

    # A barrier: how many arrived, until the last party comes.
    async with await koncli("barrier", "wait", "stage", "--expected", "2") as proc:
        err = Stream(proc.stderr)
        await err.wait_for(f"koncli: waiting at barrier {namespace}/stage: ")
        assert "/2 arrived" in err.text
        await Barrier("stage", expected=2, client=sdk).wait()
        with anyio.fail_after(60):
            assert await proc.wait() == 0

    # A gate: what it waits for, until that is marked.
    gate = Gate("ready", client=sdk)
    await gate.create([Condition.external("schema"), Condition.external("cache")])
    await gate.mark("cache")
    async with await koncli("gate", "wait", "ready") as proc:
        err = Stream(proc.stderr)
        await err.wait_for(f"waiting for gate {namespace}/ready: 1/2 met; waiting for: schema")
        await gate.mark("schema")
        with anyio.fail_after(60):
            assert await proc.wait() == 0
        assert "\x1b" not in await err.rest()  # a log line, not a redrawn one

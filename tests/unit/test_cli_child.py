"""The child process of ``koncli run``: exit status, signal forwarding, stopping, PDEATHSIG."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from konductor_sdk.cli._child import ChildProcess, shell_status
from konductor_sdk.cli._exitcodes import CliError

pytestmark = pytest.mark.anyio

PY = sys.executable
# Prints "ready" once its SIGTERM disposition is set, then sleeps until signalled.
TRAPS_TERM = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))
    print("ready", flush=True)
    while True:
        time.sleep(60)
    """
)
IGNORES_TERM = TRAPS_TERM.replace("lambda *a: sys.exit(42)", "signal.SIG_IGN")
SLEEPS = TRAPS_TERM.replace("signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))", "")


async def _ready(child: ChildProcess) -> None:
    await child.started.wait()
    assert child.stdout is not None
    assert await child.stdout.readline() == b"ready\n"


async def _drain(child: ChildProcess) -> None:
    # Read the test pipe to EOF so asyncio closes it before the loop ends.
    assert child.stdout is not None
    await child.stdout.read()


def test_shell_status() -> None:
    assert [shell_status(c) for c in (0, 1, 255, -9, -15)] == [0, 1, 255, 137, 143]


async def test_exit_status_is_the_childs() -> None:
    assert await ChildProcess([PY, "-c", "import sys; sys.exit(7)"]).run() == 7
    assert await ChildProcess([PY, "-c", "pass"]).run() == 0


async def test_killed_by_signal_is_128_plus_n() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert await ChildProcess([PY, "-c", code]).run() == 128 + signal.SIGKILL


async def test_forwarded_signal_reaches_the_child() -> None:
    child = ChildProcess([PY, "-c", TRAPS_TERM], stdout=subprocess.PIPE)
    status: list[int] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            status.append(await child.run())

        tg.start_soon(run)
        await _ready(child)
        assert child.send_signal(signal.SIGTERM)
    await _drain(child)
    assert status == [42]
    assert child.stop_signals == []  # it exited by itself, koncli did not stop it
    assert not child.send_signal(signal.SIGTERM)  # no longer running


async def test_cancellation_stops_the_child_with_sigterm() -> None:
    child = ChildProcess([PY, "-c", SLEEPS], stdout=subprocess.PIPE, grace=30)
    async with anyio.create_task_group() as tg:
        tg.start_soon(child.run)
        await _ready(child)
        tg.cancel_scope.cancel()
    await _drain(child)
    assert child.stop_signals == [signal.SIGTERM]
    assert child.returncode == -signal.SIGTERM


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period() -> None:
    child = ChildProcess([PY, "-c", IGNORES_TERM], stdout=subprocess.PIPE, grace=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(child.run)
        await _ready(child)
        tg.cancel_scope.cancel()
    await _drain(child)
    assert child.stop_signals == [signal.SIGTERM, signal.SIGKILL]
    assert child.returncode == -signal.SIGKILL


async def test_command_not_found_is_127_and_not_executable_126(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="command not found") as info:
        await ChildProcess(["koncli-no-such-command-xyz"]).run()
    assert info.value.exit_code == 127

    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(CliError, match="cannot execute") as info:
        await ChildProcess([str(script)]).run()
    assert info.value.exit_code == 126


def test_empty_command_is_rejected() -> None:
    with pytest.raises(CliError, match="no command given"):
        ChildProcess([])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_child_dies_with_koncli_even_on_sigkill() -> None:
    # A stand-in for koncli: starts a ChildProcess, reports the child's pid, waits.
    parent_code = textwrap.dedent(
        f"""
        import anyio, subprocess, sys
        from konductor_sdk.cli._child import ChildProcess

        async def main():
            child = ChildProcess([sys.executable, "-c", {SLEEPS!r}], stdout=subprocess.PIPE)
            async with anyio.create_task_group() as tg:
                tg.start_soon(child.run)
                await child.started.wait()
                await child.stdout.readline()
                print(child.pid, flush=True)

        anyio.run(main, backend="asyncio")
        """
    )
    with subprocess.Popen([PY, "-c", parent_code], stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            child_pid = int(parent.stdout.readline())
            pidfd = os.pidfd_open(child_pid)
        finally:
            parent.kill()
    try:
        # Readable once the child has exited: a bounded wait, not a sleep.
        readable, _, _ = select.select([pidfd], [], [], 20)
        assert readable, "the child outlived its SIGKILLed parent"
    finally:
        os.close(pidfd)


async def test_exit_status_after_forwarding_sigint_to_a_python_child() -> None:
    code = "import time; print('ready', flush=True); time.sleep(60)"
    child = ChildProcess([PY, "-c", code], stdout=subprocess.PIPE)
    async with anyio.create_task_group() as tg:
        result: list[int] = []

        async def run() -> None:
            result.append(await child.run())

        tg.start_soon(run)
        await _ready(child)
        child.send_signal(signal.SIGINT)
    await _drain(child)
    # Python dies of KeyboardInterrupt by re-raising SIGINT: 130, like a shell reports.
    assert result == [130]

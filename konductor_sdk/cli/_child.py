"""The child process of ``koncli run``: start it, forward signals, stop it on demand.

:meth:`ChildProcess.run` returns the child's exit status the way a shell reports it
(``128 + N`` when signal ``N`` killed it). If the task running it is cancelled (a permit
was lost, or an error elsewhere) it stops the child before re-raising, shielded from the
cancellation: ``SIGTERM``, then ``SIGKILL`` after the grace period. On Linux the child also
asks the kernel for ``SIGKILL`` should koncli itself die (``PR_SET_PDEATHSIG``), so a
``kill -9`` of koncli cannot leave the child running after its permits expire.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final, final

import anyio

from ._exitcodes import CliError, ExitCode

_PR_SET_PDEATHSIG: Final = 1


def _death_signal_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # Resolved before fork: between fork and exec the child only makes the foreign call.
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # koncli died between fork() and prctl()
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def command_argv(command: Sequence[str], usage: str) -> tuple[str, ...]:
    """COMMAND as the user gave it after ``--``; a ``--`` is never taken for the program.

    Raises:
        ConfigurationError: nothing but ``--`` (exit 2, before anything is written).
    """
    argv = list(command)
    while argv and argv[0] == "--":
        del argv[0]
    if not argv:
        from konductor_sdk._kernel.errors import ConfigurationError

        raise ConfigurationError(f"no command given (use: {usage})")
    return tuple(argv)


def shell_status(returncode: int) -> int:
    """``Popen.returncode`` as a shell reports it: ``-N`` (killed by signal N) is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


@final
class ChildProcess:
    """One child command, run to completion or stopped.

    Args:
        argv: the command and its arguments (looked up on ``PATH``).
        env: its environment.
        grace: seconds between ``SIGTERM`` and ``SIGKILL`` when it must be stopped.
        stdout: where its stdout goes (default: inherited), for tests.

    Attributes:
        started: set once the child is running (``pid`` is known then).
        stop_signals: the signals koncli sent to stop it, in order (empty if it
            exited on its own).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        grace: float = 10.0,
        stdout: int | None = None,
    ) -> None:
        if not argv:
            raise CliError("no command given (use: koncli run [OPTIONS] -- COMMAND [ARGS]...)")
        self.argv = tuple(argv)
        self.env = dict(env) if env is not None else None
        self.grace = grace
        self._stdout = stdout
        self._process: asyncio.subprocess.Process | None = None
        self.started = anyio.Event()
        self.stop_signals: list[signal.Signals] = []

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"<ChildProcess {self.argv[0]!r} pid={pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        return self._process.stdout if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def run(self) -> int:
        """Start the child and wait for it; its exit status (128+N if killed by signal N).

        Raises:
            CliError: the command was not found (exit 127) or is not executable (126).
        """
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=None,
                stdout=self._stdout,
                stderr=None,
                env=self.env,
                preexec_fn=_death_signal_hook(),
            )
        except FileNotFoundError as exc:
            error = CliError(f"{self.argv[0]}: command not found")
            error.exit_code = ExitCode.NOT_FOUND
            raise error from exc
        except PermissionError as exc:
            error = CliError(f"{self.argv[0]}: cannot execute: {exc.strerror}")
            error.exit_code = ExitCode.CANNOT_EXECUTE
            raise error from exc
        self.started.set()
        try:
            return shell_status(await self._process.wait())
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop()
            raise

    def send_signal(self, signum: int) -> bool:
        """Forward ``signum`` to the child; ``False`` if it is not running."""
        if not self.running or self._process is None:
            return False
        try:
            self._process.send_signal(signum)
        except ProcessLookupError:
            return False
        return True

    async def stop(self) -> None:
        """``SIGTERM``, wait up to ``grace`` seconds, then ``SIGKILL``; wait until it is gone."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        if self.send_signal(signal.SIGTERM):
            self.stop_signals.append(signal.SIGTERM)
        with anyio.move_on_after(self.grace):
            await process.wait()
        if process.returncode is None and self.send_signal(signal.SIGKILL):
            self.stop_signals.append(signal.SIGKILL)
        await process.wait()


def terminal_delivers_sigint() -> bool:
    """Whether a Ctrl-C reaches the child directly: koncli's process group (which the child
    shares) is the terminal's foreground group. Then forwarding SIGINT would deliver it
    twice."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.isatty():
                return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError):
            continue
    return False

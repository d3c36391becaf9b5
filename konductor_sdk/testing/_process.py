"""Child processes that cannot outlive their parent, and the helpers around them.

Three layers make sure no etcd or kube-apiserver is left behind:

* each child leads its own process group (``start_new_session``), so stopping signals the
  whole group and a Ctrl-C in the terminal reaches only the Python process, which then
  cleans up in order instead of the children dying half-way through a request;
* on Linux each child asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), which covers ``kill -9`` of pytest and crashed workers;
* :func:`stop_all_at_exit` stops whatever is still registered when the interpreter exits.

A child may be frozen on purpose (:meth:`ManagedProcess.freeze`, SIGSTOP) to inject faults.
Every way of stopping it sends SIGCONT after SIGTERM, so a frozen child handles the SIGTERM
instead of staying stopped until the SIGKILL; ``PR_SET_PDEATHSIG``'s SIGKILL ends a stopped
process as well.

Caveat of ``PR_SET_PDEATHSIG``: it fires when the *thread* that forked the child exits, not
the process. A child forked from an ``anyio.to_thread`` worker would be killed as soon as that
idle worker retires. Every child is therefore forked by one daemon thread that lives as long
as the interpreter, whichever thread asked for it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Final, TypeVar, final

import anyio
import anyio.to_thread

_T = TypeVar("_T")

__all__ = ["Frozen", "ManagedProcess", "free_port", "log_tail", "port_is_free", "stop_all"]

_PR_SET_PDEATHSIG: Final = 1
# How long freeze()/thaw() wait for the kernel to (un)stop every thread of the process. The
# signal itself is delivered at once; a thread in uninterruptible sleep stops when it wakes.
_SIGNAL_SETTLE_SECONDS: Final = 10.0


def _death_signal_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # Resolved before fork: the child then only makes the foreign call.
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody would kill us.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


@final
class _Spawner:
    """Runs callables on a single long-lived daemon thread (the parent of every child)."""

    def __init__(self) -> None:
        self._queue: SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, function: Callable[[], _T]) -> _T:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="konductor-spawner", daemon=True
                )
                self._thread.start()
        future: Future[_T] = Future()
        self._queue.put((function, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            function, future = self._queue.get()
            try:
                future.set_result(function())
            except BaseException as error:  # handed to the caller, which re-raises it
                future.set_exception(error)


_spawner: Final = _Spawner()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Returns:
        The port number (the kernel's choice, so concurrent callers get different ones).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Tell whether a listener could bind ``127.0.0.1:port``.

    ``SO_REUSEADDR`` makes connections lingering in TIME_WAIT irrelevant: only a live
    listener makes the bind fail.

    Args:
        port: The port to probe.

    Returns:
        True when nothing listens on the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def log_tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a log file ('' if it does not exist).

    Args:
        path: The log file.
        lines: How many lines to keep.

    Returns:
        The tail, newline-joined.
    """
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# Insertion-ordered, so the exit handler stops processes in reverse start order.
_live: Final[dict[int, ManagedProcess]] = {}
_live_lock: Final = threading.Lock()


@final
class ManagedProcess:
    """One child process with its output in a log file, stoppable exactly once."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path) -> None:
        """Spawn the process now.

        Args:
            name: A short name for messages (``etcd``, ``kube-apiserver``).
            args: The command line.
            log_path: File receiving stdout and stderr.
        """
        self.name = name
        self.log_path = log_path
        self._stop_lock = threading.Lock()  # one stopper at a time: it alone may reap
        self._frozen = False
        with log_path.open("ab") as log:
            self._popen = _spawner.run(
                lambda: subprocess.Popen(
                    list(args),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    # preexec_fn is unsafe only with locks held across fork; the hook takes none.
                    preexec_fn=_death_signal_hook(),
                )
            )
        self.pid = self._popen.pid
        with _live_lock:
            _live[self.pid] = self

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self._popen.returncode}"
        if self._frozen and self.running:
            state = "frozen"
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self._popen.poll() is None

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` stopped the process and nothing has resumed it since."""
        return self._frozen and self.running

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while running."""
        return self._popen.poll()

    def tail(self, lines: int = 30) -> str:
        """Return the end of the process log.

        Args:
            lines: How many lines.

        Returns:
            The tail of the log.
        """
        return log_tail(self.log_path, lines)

    def freeze(self) -> None:
        """Stop the process group with SIGSTOP; return once every thread is stopped.

        A frozen process keeps its sockets and memory but runs no code: connections to it
        stay open and requests to it wait, as with a process paused by the kernel, a
        debugger or a VM migration. Idempotent.

        Raises:
            ProcessLookupError: The process has exited.
            TimeoutError: The kernel did not report it stopped in time.
        """
        with self._stop_lock:
            if self._popen.poll() is not None:
                raise ProcessLookupError(f"{self.name} (pid {self.pid}) has exited")
            self._frozen = True
            self._signal_group(signal.SIGSTOP)
            _await_threads_stopped(self.pid, stopped=True)

    def thaw(self) -> None:
        """Resume a frozen process group with SIGCONT; return once it runs again.

        Idempotent, and a no-op for a process that has exited.

        Raises:
            TimeoutError: The kernel did not report it running again in time.
        """
        with self._stop_lock:
            self._frozen = False
            if self._popen.poll() is not None:
                return
            self._signal_group(signal.SIGCONT)
            _await_threads_stopped(self.pid, stopped=False)

    def stop(self, grace: float = 10.0) -> None:
        """Send SIGTERM to the process group, SIGKILL after ``grace`` seconds, then reap.

        A frozen process is resumed (SIGCONT after the SIGTERM) so that it can exit
        cleanly. Safe to call repeatedly and from several threads.

        Args:
            grace: Seconds to wait for a clean exit before killing.
        """
        with _live_lock:
            _live.pop(self.pid, None)
        with self._stop_lock:
            self._frozen = False
            if self._popen.poll() is not None:
                return
            self._signal_group(signal.SIGTERM)
            # Pending until now if the group was stopped; harmless otherwise.
            self._signal_group(signal.SIGCONT)
            try:
                self._popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                # Still unreaped here, so the group id cannot have been recycled yet.
                self._signal_group(signal.SIGKILL)
                self._popen.wait()

    def kill(self) -> None:
        """Send SIGKILL to the process group (``kill -9``; frozen or not) and reap it.

        Idempotent.
        """
        with _live_lock:
            _live.pop(self.pid, None)
        with self._stop_lock:
            self._frozen = False
            if self._popen.poll() is not None:
                return
            self._signal_group(signal.SIGKILL)
            self._popen.wait()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def _thread_states(pid: int) -> list[str] | None:
    """The scheduler state letter of every thread of ``pid``; None without procfs."""
    states = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []  # exited (and reaped) meanwhile
    except OSError:
        return None
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        states.append(stat.rsplit(")", 1)[1].split()[0])
    return states


def _await_threads_stopped(pid: int, *, stopped: bool) -> None:
    """Wait until every thread of ``pid`` is stopped (``T``), or none is.

    Without procfs (macOS) there is nothing to look at: signals are delivered before
    ``kill`` returns to a single-threaded sender, which is as good as it gets there.
    """
    deadline = time.monotonic() + _SIGNAL_SETTLE_SECONDS
    delay = 0.0005
    while True:
        states = _thread_states(pid)
        if states is None or all((s in {"T", "t"}) == stopped for s in states):
            return
        if {"Z", "X"} & set(states):
            return  # exiting: neither frozen nor running any more
        if time.monotonic() > deadline:
            verb = "stop" if stopped else "resume"
            raise TimeoutError(f"pid {pid} did not {verb} within {_SIGNAL_SETTLE_SECONDS}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@final
class Frozen:
    """Processes frozen for the duration of a ``with`` or ``async with`` block.

    Made by :meth:`LocalControlPlane.frozen <konductor_sdk.testing.LocalControlPlane.frozen>`.
    The processes are frozen on entry and thawed on exit, however the block ends. The
    async form runs both steps in a worker thread, the thaw shielded from cancellation.
    """

    def __init__(
        self, freeze: Callable[[], None], thaw: Callable[[], None], names: Sequence[str]
    ) -> None:
        """Remember what to do; nothing happens before entry.

        Args:
            freeze: Freezes the processes (blocks until they are stopped).
            thaw: Thaws them.
            names: Their names, for ``repr``.
        """
        self._freeze = freeze
        self._thaw = thaw
        self.names = tuple(names)

    def __repr__(self) -> str:
        return f"<Frozen {' '.join(self.names)}>"

    def __enter__(self) -> None:
        self._freeze()

    def __exit__(self, *exc_info: object) -> None:
        self._thaw()

    async def __aenter__(self) -> None:
        await anyio.to_thread.run_sync(self._freeze)

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._thaw)


def stop_all(grace: float = 5.0) -> None:
    """Stop every process still registered, newest first (apiservers before their etcd).

    Args:
        grace: Seconds each process gets to exit after SIGTERM.
    """
    with _live_lock:
        processes = list(_live.values())
    for process in reversed(processes):
        process.stop(grace)


atexit.register(stop_all)

"""Child processes that cannot outlive their parent, and the helpers around them.

Three layers make sure no etcd or kube-apiserver is left behind:

* each child leads its own process group (``start_new_session``), so stopping signals the
  whole group and a Ctrl-C in the terminal reaches only the Python process, which then
  cleans up in order instead of the children dying half-way through a request;
* on Linux each child asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), which covers ``kill -9`` of pytest and crashed workers;
* :func:`stop_all_at_exit` stops whatever is still registered when the interpreter exits.

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
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Final, TypeVar, final

_T = TypeVar("_T")

__all__ = ["ManagedProcess", "free_port", "log_tail", "port_is_free", "stop_all"]

_PR_SET_PDEATHSIG: Final = 1


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
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self._popen.poll() is None

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

    def stop(self, grace: float = 10.0) -> None:
        """Send SIGTERM to the process group, SIGKILL after ``grace`` seconds, then reap.

        Safe to call repeatedly and from several threads.

        Args:
            grace: Seconds to wait for a clean exit before killing.
        """
        with _live_lock:
            _live.pop(self.pid, None)
        with self._stop_lock:
            if self._popen.poll() is not None:
                return
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                # Still unreaped here, so the group id cannot have been recycled yet.
                self._signal_group(signal.SIGKILL)
                self._popen.wait()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


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

"""Benchmark work in separate processes: a line-per-message JSON protocol over stdio.

The parent starts ``python -m benchmarks._child <module>:<function> <params-json>``; the
child runs ``await function(params, link)`` on asyncio and talks to the parent through
``link``: it ``send``s events (``{"event": "ready"}``...) on stdout and ``receive``s
commands from stdin. Its return value goes back as the final ``result`` event. Logging and
tracebacks go to stderr, which the parent writes to a log file.

Timestamps crossing the process boundary are ``time.monotonic()`` values: on Linux that is
``CLOCK_MONOTONIC``, one clock for the whole machine, so a parent and its children can
subtract each other's readings (this is why the benchmarks run on one host only).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, final

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.text import TextReceiveStream

ChildFunction = Callable[[dict[str, Any], "Link"], Awaitable[dict[str, Any]]]

REPO_ROOT = Path(__file__).resolve().parent.parent


class ChildFailed(RuntimeError):
    """A child process exited without a result, or reported an error."""


@final
class Link:
    """The child's end: send events to the parent, receive its commands."""

    def __init__(self) -> None:
        self._out = sys.stdout
        self._lock = threading.Lock()

    async def send(self, event: str, **data: Any) -> None:
        self.emit(event, **data)

    def emit(self, event: str, **data: Any) -> None:
        """:meth:`send` for callbacks running in other threads (one line, never torn)."""
        line = json.dumps({"event": event, **data}) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    async def receive(self) -> dict[str, Any]:
        """The parent's next command; raises EOFError when the parent closed stdin."""
        line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            raise EOFError("parent closed stdin")
        message: dict[str, Any] = json.loads(line)
        return message


@final
class Child:
    """The parent's end of one child process."""

    def __init__(self, name: str, process: anyio.abc.Process, log: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self._log = log
        self._buffer = ""
        assert process.stdout is not None
        self._lines = TextReceiveStream(process.stdout)

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.process.pid}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    async def receive(self) -> dict[str, Any]:
        """The next event from the child.

        Raises:
            ChildFailed: the child exited first, or sent an ``error`` event.
        """
        while "\n" not in self._buffer:
            try:
                self._buffer += await self._lines.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
                raise ChildFailed(f"{self.name} exited; see its log {self._log.name}") from exc
        line, self._buffer = self._buffer.split("\n", 1)
        message: dict[str, Any] = json.loads(line)
        if message.get("event") == "error":
            raise ChildFailed(f"{self.name} failed: {message.get('error')}")
        return message

    async def expect(self, event: str) -> dict[str, Any]:
        """The next event, which must be ``event``."""
        message = await self.receive()
        if message.get("event") != event:
            raise ChildFailed(f"{self.name}: expected {event!r}, got {message!r}")
        return message

    async def send(self, **message: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps(message) + "\n").encode())

    def signal(self, signum: signal.Signals) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def aclose(self) -> None:
        """Kill the child if it still runs and reap it; never raises."""
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            await self.process.aclose()
            self._log.close()


async def spawn(
    target: str,
    params: dict[str, Any],
    *,
    name: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Child:
    """Start ``target`` (``"benchmarks.scenarios.x:function"``) in a new Python process."""
    log_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once per child, local disk
    log = (log_dir / f"{name}.log").open("ab")
    process = await anyio.open_process(
        [sys.executable, "-m", "benchmarks._child", target, json.dumps(params)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    return Child(name, process, log)


def rusage_cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _main(target: str, params: dict[str, Any]) -> None:
    module_name, _, function_name = target.partition(":")
    function: ChildFunction = getattr(importlib.import_module(module_name), function_name)
    link = Link()
    try:
        result = await function(params, link)
    except Exception as exc:
        traceback.print_exc()
        await link.send("error", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    await link.send("result", cpu_s=rusage_cpu_seconds(), **result)


def main() -> None:
    # A parent that dies must not leave children hammering the server; SIGTERM is left
    # to the child function (leader candidates use it as "step down gracefully").
    _set_parent_death_signal()
    anyio.run(_main, sys.argv[1], json.loads(sys.argv[2]), backend="asyncio")


def _set_parent_death_signal() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:  # not Linux: the parent's cleanup still kills children
        pass


if __name__ == "__main__":
    main()

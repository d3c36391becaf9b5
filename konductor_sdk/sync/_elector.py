"""The hand-written part of the blocking :class:`LeaderElector`: running and stopping it.

The async elector runs until cancelled and calls its callbacks in the event loop. A blocking
one runs until :meth:`~BlockingElector.stop` (or Ctrl-C) and calls its callbacks in worker
threads; ``on_started_leading`` gets a :class:`Term` whose ``stopped`` event tells the
thread that its term ended, since a thread cannot be cancelled. The generator
(``_generate``) makes ``konductor_sdk.sync.LeaderElector`` a subclass of
:class:`BlockingElector` and generates the rest (properties, statistics) from the async
class; ``tests/unit/test_sync_parity.py`` lists these differences.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, final

import anyio
import anyio.to_thread

from konductor_sdk import election as _election

from . import _portal, _twin
from .client import Client

__all__ = ["BlockingElector", "Term"]


@final
class Term:
    """One leadership term, handed to a blocking ``on_started_leading(term)``.

    The callback runs in a worker thread. When leadership ends, :attr:`stopped` is set;
    the callback must then return promptly: leadership is no longer guaranteed.
    """

    __module__ = "konductor_sdk.sync"  # its public home (reprs, tracebacks, docs)

    def __init__(self, token: int) -> None:
        self.token = token
        self.stopped = threading.Event()

    def __repr__(self) -> str:
        return f"<Term token={self.token} stopped={self.stopped.is_set()}>"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the term ends (or ``timeout``); True if it ended."""
        return self.stopped.wait(timeout)


async def _in_thread(func: Callable[..., Any] | None, *args: Any) -> None:
    if func is not None:
        await anyio.to_thread.run_sync(func, *args)


class BlockingElector(_twin.Twin[_election.LeaderElector]):
    """Blocking twin of :class:`konductor_sdk.election.LeaderElector`.

    Args:
        config: see :class:`~konductor_sdk.election.ElectionConfig`.
        client: default: the blocking side's default client.
        on_started_leading: ``fn(term)``, run in a worker thread for each term; may block
            for the whole term, but must return soon after ``term.stopped`` is set. If it
            raises, the lease is released and :meth:`run` re-raises.
        on_stopped_leading: ``fn()``, in a worker thread, after every term (and once if
            never leading).
        on_new_leader: ``fn(identity)``, in a worker thread, when the observed leader
            changes.
    """

    def __init__(
        self,
        config: _election.ElectionConfig,
        *,
        client: Client | None = None,
        on_started_leading: Callable[[Term], Any] | None = None,
        on_stopped_leading: Callable[[], Any] | None = None,
        on_new_leader: Callable[[str], Any] | None = None,
    ) -> None:
        self._started = on_started_leading
        self._bind(
            _portal.call(
                _election.LeaderElector,
                config,
                client=_twin.unwrap(client),
                on_started_leading=self._lead,
                on_stopped_leading=lambda: _in_thread(on_stopped_leading),
                on_new_leader=lambda identity: _in_thread(on_new_leader, identity),
            )
        )
        self._lock = threading.Lock()
        self._scope: anyio.CancelScope | None = None
        self._stop = False
        self._running = False
        self._began = threading.Event()
        self._finished = threading.Event()

    async def _lead(self, token: int) -> None:
        term = Term(token)
        error: Exception | None = None

        async def signal_when_cancelled() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                term.stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(signal_when_cancelled)
            try:
                # A thread cannot be cancelled: wait for it, shielded, after telling it.
                with anyio.CancelScope(shield=True):
                    await _in_thread(self._started, term)
            except Exception as exc:
                error = exc
                tg.cancel_scope.cancel()
            else:
                await anyio.sleep_forever()  # returned: keep leading, like client-go
        if error is not None:
            raise error

    async def _run(self) -> None:
        self._began.set()
        try:
            with anyio.CancelScope() as scope:
                with self._lock:
                    self._scope = scope
                    if self._stop:
                        scope.cancel()
                await self._async.run()
        finally:
            self._finished.set()

    def run(self) -> None:
        """Campaign and lead until :meth:`stop` (from another thread) or Ctrl-C; on the
        way out the term ends, the lease is released and ``on_stopped_leading`` runs.

        Raises:
            RuntimeError: this elector is already running.
        """
        with self._lock:
            if self._running:
                raise RuntimeError(f"{self!r} is already running")
            self._running = True
            self._began.clear()
            self._finished.clear()
        try:
            _portal.run(self._run)
        except BaseException:
            self.stop()
            if self._began.is_set():
                self._finished.wait()  # let release and on_stopped_leading finish
            raise
        finally:
            with self._lock:
                self._stop, self._scope, self._running = False, None, False

    def stop(self) -> None:
        """Make :meth:`run` return (thread-safe; also from inside a callback)."""
        with self._lock:
            self._stop = True
            scope = self._scope
        if scope is not None:
            _portal.call(scope.cancel)

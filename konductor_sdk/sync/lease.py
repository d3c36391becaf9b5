"""Blocking Lease and LeaderElector, for scripts: ``with Lease("nightly-report"): ...``.

Everything runs in the portal's event loop (see ``_portal``): renewal keeps going while the
calling thread works. What the blocking form cannot do is *cancel* that thread when the
lease is lost: a long body should check ``held.lost`` (or hand ``held.token`` to whatever
it writes to), and :class:`LeadershipLost` is raised when the ``with`` block ends.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, final

import anyio
import anyio.to_thread

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import LeadershipLost
from konductor_sdk._machines import lease as _lease_state

from .. import election as _election
from .. import lease as _lease
from . import _portal

__all__ = ["HeldLease", "LeaderElector", "Lease", "Term"]


def _acquire(method: Callable[[], Awaitable[_lease.HeldLease]]) -> _lease.HeldLease:
    future = _portal.portal().start_task_soon(method)
    try:
        return future.result()
    except BaseException:
        granted = not future.cancel() and not future.cancelled() and future.exception() is None
        if granted:
            # Granted just as we were interrupted: nobody would ever release it.
            _portal.run(future.result().release)
        raise


@final
class HeldLease:
    """Blocking view of an acquisition (:class:`konductor_sdk.lease.HeldLease`)."""

    def __init__(self, held: _lease.HeldLease) -> None:
        self._held = held

    def __repr__(self) -> str:
        return repr(self._held)

    @property
    def token(self) -> int:
        return self._held.token

    @property
    def key(self) -> str:
        return self._held.key

    @property
    def uid(self) -> str:
        return self._held.uid

    @property
    def lost(self) -> bool:
        """True once the lease ended while held; stop working on the singleton's behalf."""
        return self._held.lost

    @property
    def lost_reason(self) -> str | None:
        return self._held.lost_reason

    def release(self) -> None:
        """Give the lease up (idempotent); a waiting candidate takes over at once."""
        _portal.run(self._held.release)


@final
class Lease:
    """Blocking twin of :class:`konductor_sdk.lease.Lease`; same arguments and errors.

    Raises:
        ConfigurationError: ``name``, ``ttl`` or ``priority`` out of range.
    """

    def __init__(
        self,
        name: str,
        *,
        ttl: int = _lease_state.DEFAULT_TTL_SECONDS,
        namespace: str | None = None,
        client: Client | None = None,
        priority: int = 0,
    ) -> None:
        # Nothing here binds to an event loop, so bad input fails in the caller's thread.
        self._lease = _lease.Lease(
            name, ttl=ttl, namespace=namespace, client=client, priority=priority
        )
        self._local = threading.local()

    def __repr__(self) -> str:
        return repr(self._lease)

    @property
    def name(self) -> str:
        return self._lease.name

    def acquire(self) -> HeldLease:
        """Block until held; renewal runs in the background until :meth:`HeldLease.release`."""
        return HeldLease(_acquire(self._lease.acquire))

    def acquire_nowait(self) -> HeldLease:
        """Take the lease now or raise :class:`~konductor_sdk.WouldBlock`."""
        return HeldLease(_acquire(self._lease.acquire_nowait))

    def __enter__(self) -> HeldLease:
        held = self.acquire()
        stack: list[HeldLease] = self._local.__dict__.setdefault("stack", [])
        stack.append(held)
        return held

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held: HeldLease = self._local.stack.pop()
        lost = held.lost
        held.release()
        if lost:
            raise LeadershipLost(
                f"Lease {self._lease.name}: lost while held (token {held.token}): "
                f"{held.lost_reason}"
            ) from exc

    def status(self) -> _lease.LeaseStatus:
        """The lease as stored now; see :meth:`konductor_sdk.lease.Lease.status`."""
        return _portal.run(self._lease.status)

    def create(self, *, exist_ok: bool = False) -> None:
        """Create the Lease object; see :meth:`konductor_sdk.lease.Lease.create`."""
        _portal.run(self._lease.create, exist_ok=exist_ok)

    def delete(self) -> None:
        """Delete the Lease object; see :meth:`konductor_sdk.lease.Lease.delete`."""
        _portal.run(self._lease.delete)

    def statistics(self) -> _lease.LeaseStatistics:
        """What this lease did in this process (no I/O)."""
        return self._lease.statistics()


@final
class Term:
    """One leadership term, handed to a blocking ``on_started_leading(term)``.

    The callback runs in a worker thread. When leadership ends, :attr:`stopped` is set;
    the callback must then return promptly: leadership is no longer guaranteed.
    """

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


@final
class LeaderElector:
    """Blocking twin of :class:`konductor_sdk.election.LeaderElector`.

    Args:
        config: see :class:`~konductor_sdk.election.ElectionConfig`.
        client: default: the portal loop's default client.
        on_started_leading: ``fn(term)``, run in a worker thread for each term; may block
            for the whole term, but must return soon after ``term.stopped`` is set. If it
            raises, the lease is released and :meth:`run` re-raises.
        on_stopped_leading: ``fn()``, after every term (and once if never leading).
        on_new_leader: ``fn(identity)`` when the observed leader changes.
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
        self._elector = _election.LeaderElector(
            config,
            client=client,
            on_started_leading=self._lead,
            on_stopped_leading=lambda: _in_thread(on_stopped_leading),
            on_new_leader=lambda identity: _in_thread(on_new_leader, identity),
        )
        self._lock = threading.Lock()
        self._scope: anyio.CancelScope | None = None
        self._stop = False
        self._finished = threading.Event()

    def __repr__(self) -> str:
        return repr(self._elector)

    @property
    def is_leader(self) -> bool:
        return self._elector.is_leader

    @property
    def leader(self) -> str | None:
        return self._elector.leader

    @property
    def token(self) -> int | None:
        return self._elector.token

    def statistics(self) -> _election.ElectorStatistics:
        """A snapshot of the elector (no I/O)."""
        return self._elector.statistics()

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
        try:
            with anyio.CancelScope() as scope:
                with self._lock:
                    self._scope = scope
                    if self._stop:
                        scope.cancel()
                await self._elector.run()
        finally:
            self._finished.set()

    def run(self) -> None:
        """Campaign and lead until :meth:`stop` (from another thread) or Ctrl-C; on the
        way out the term ends, the lease is released and ``on_stopped_leading`` runs."""
        self._finished.clear()
        try:
            _portal.run(self._run)
        except BaseException:
            self.stop()
            self._finished.wait()  # let release and on_stopped_leading finish
            raise
        finally:
            with self._lock:
                self._stop, self._scope = False, None

    def stop(self) -> None:
        """Make :meth:`run` return (thread-safe; also from inside a callback)."""
        with self._lock:
            self._stop = True
            scope = self._scope
        if scope is not None:
            _portal.portal().call(scope.cancel)

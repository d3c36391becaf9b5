"""Blocking twins of :mod:`konductor_sdk.mutex` (generated, do not edit).

Mutex: a cluster-wide lock, the one-permit member of the semaphore family.

::

    with Mutex("db-migrate") as permit:          # created if missing
        migrate(fencing_token=permit.token)

It has its own kind (``Mutex``, short name ``mtx``) so ``kubectl get mutexes`` shows who
holds what, and the same machinery as :class:`~konductor_sdk.Semaphore`: a queue of
claims, priority, preemption, a session for liveness, fencing tokens. It is not
re-entrant (see ``docs/semaphore.md``).

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import final

from konductor_sdk import SemaphoreStatistics, SemaphoreStatus
from konductor_sdk import mutex as _mutex

from . import _context, _portal, _twin
from .client import Client
from .semaphore import Permit

__all__ = [
    "Mutex",
]


@final
class Mutex(_context.NotReentrant, _context.BlockingContext, _twin.Twin[_mutex.Mutex]):
    """A lock stored in a ``Mutex`` custom resource (created if missing).

    Args:
        name: the object's name (DNS subdomain).
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: seconds of the session the lock lives with: if this process stops renewing
            it for that long, the lock is reaped. 0: held until released or the pod ends
            (only in a pod).

    Raises:
        ConfigurationError: an argument is out of range (nothing is written).
    """

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = 30,
    ) -> None:
        self._bind(
            _portal.call(
                _mutex.Mutex, name, namespace=namespace, client=_twin.unwrap(client), ttl=ttl
            )
        )

    def __enter__(self) -> Permit:
        return self._enter_block(self._owned_context(_context.blocking(self._async, Permit._wrap)))

    def hold(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> AbstractContextManager[Permit]:
        """``with mutex.hold(...) as permit``: lock, hold, unlock.

        The body is cancelled and :class:`~konductor_sdk.PermitLost` raised on exit if the
        lock ends while held (or is preempted). Arguments as for ``Semaphore.hold``.

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._owned_context(
            _context.blocking(
                _portal.call(self._async.hold, priority=priority, preemptible=preemptible, ttl=ttl),
                Permit._wrap,
            )
        )

    def acquire(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Wait for the lock; held until ``permit.release()`` (or its session ends).

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._owned(
            lambda: Permit._wrap(
                _portal.run(
                    self._async.acquire, priority=priority, preemptible=preemptible, ttl=ttl
                )
            )
        )

    def acquire_nowait(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Take the lock only if it is free and nobody is queued.

        Raises:
            WouldBlock: held, or others are waiting.
        """
        return self._owned(
            lambda: Permit._wrap(
                _portal.run(
                    self._async.acquire_nowait, priority=priority, preemptible=preemptible, ttl=ttl
                )
            )
        )

    def locked(self) -> bool:
        """Whether someone holds the lock now (a fresh read)."""
        return _portal.run(self._async.locked)

    @property
    def name(self) -> str:
        return self._async.name

    @property
    def namespace(self) -> str | None:
        return self._async.namespace

    def create(self) -> SemaphoreStatus:
        """Create the object. Raises ``AlreadyExistsError`` if it exists."""
        return _portal.run(self._async.create)

    def delete(self) -> None:
        """Delete the object; holders' locks are lost, waiters fail."""
        _portal.run(self._async.delete)

    def status(self) -> SemaphoreStatus:
        """A fresh snapshot (an RWMutex's holders carry ``mode``)."""
        return _portal.run(self._async.status)

    def force_release(self, who: str) -> tuple[str, ...]:
        """Remove grants by key (``slot#token``), first slot, holder id or session name;
        returns the removed keys.
        """
        return _portal.run(self._async.force_release, who)

    def changes(self) -> Iterator[SemaphoreStatus]:
        """The status now and after every change, from the shared watches (see
        :meth:`konductor_sdk.Semaphore.changes`).
        """
        return _twin.BlockingIterator(_portal.call(self._async.changes), _twin.same)

    def statistics(self) -> SemaphoreStatistics:
        """Counters of this process's use of the lock (no I/O)."""
        return _portal.call(self._async.statistics)

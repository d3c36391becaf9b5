"""Blocking twins of :mod:`konductor_sdk.rwmutex` (generated, do not edit).

RWMutex: shared readers or one exclusive writer, cluster-wide.

::

    rw = RWMutex("config")
    with rw.read():            # many readers at once
        ...
    with rw.write():           # alone
        ...

Stored as an ``RWMutex`` object and run by the semaphore machinery with
``spec.maxReaders`` slots: a reader takes one slot, a writer all of them, and the API
server refuses overlapping grants, so a writer is always alone. **Writer
preference**: the queue is strictly ordered, so a waiting writer blocks every reader that
arrives after it (readers cannot starve a writer), while readers that queued before the
writer are served first (a stream of writers cannot starve them either). Priorities and
preemption work as for a Semaphore. Not re-entrant: a task holding the lock (in either
mode) through this object gets ``RuntimeError`` if it tries again.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import final

from konductor_sdk import SemaphoreStatistics, SemaphoreStatus
from konductor_sdk import rwmutex as _rwmutex
from konductor_sdk.rwmutex import Mode as Mode

from . import _context, _portal, _twin
from .client import Client
from .semaphore import Permit

__all__ = [
    "Mode",
    "RWMutex",
]


@final
class RWMutex(_context.NotReentrant, _twin.Twin[_rwmutex.RWMutex]):
    """A readers-writer lock stored in an ``RWMutex`` custom resource.

    Args:
        name: the object's name (DNS subdomain).
        max_readers: ``spec.maxReaders`` to create the object with if it does not exist
            (1..4096, default 1024); an existing object keeps its own.
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
        max_readers: int = 1024,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = 30,
    ) -> None:
        self._bind(
            _portal.call(
                _rwmutex.RWMutex,
                name,
                max_readers=max_readers,
                namespace=namespace,
                client=_twin.unwrap(client),
                ttl=ttl,
            )
        )

    def read(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> AbstractContextManager[Permit]:
        """``with rw.read()``: hold a shared read lock for the body.

        The body is cancelled and :class:`~konductor_sdk.PermitLost` raised on exit if the
        lock ends while held (or is preempted).

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._owned_context(
            _context.blocking(
                _portal.call(self._async.read, priority=priority, preemptible=preemptible, ttl=ttl),
                Permit._wrap,
            )
        )

    def write(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> AbstractContextManager[Permit]:
        """``with rw.write()``: hold the exclusive write lock for the body.

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._owned_context(
            _context.blocking(
                _portal.call(
                    self._async.write, priority=priority, preemptible=preemptible, ttl=ttl
                ),
                Permit._wrap,
            )
        )

    def acquire(
        self, mode: Mode, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Wait for the lock in ``mode``; held until released (or its session ends).

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._owned(
            lambda: Permit._wrap(
                _portal.run(
                    self._async.acquire, mode, priority=priority, preemptible=preemptible, ttl=ttl
                )
            )
        )

    def acquire_nowait(
        self, mode: Mode, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Take the lock in ``mode`` only if that is possible at once.

        Raises:
            WouldBlock: incompatible holders, or earlier/higher waiters are queued.
        """
        return self._owned(
            lambda: Permit._wrap(
                _portal.run(
                    self._async.acquire_nowait,
                    mode,
                    priority=priority,
                    preemptible=preemptible,
                    ttl=ttl,
                )
            )
        )

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

"""RWMutex: shared readers or one exclusive writer, cluster-wide.

::

    rw = RWMutex("config")
    async with rw.read():      # many readers at once
        ...
    async with rw.write():     # alone
        ...

Stored as an ``RWMutex`` object and run by the semaphore machinery with
``spec.maxReaders`` slots: a reader takes one slot, a writer all of them, and the API
server refuses overlapping grants, so a writer is always alone. **Writer
preference**: the queue is strictly ordered, so a waiting writer blocks every reader that
arrives after it (readers cannot starve a writer), while readers that queued before the
writer are served first (a stream of writers cannot starve them either). Priorities and
preemption work as for a Semaphore. Not re-entrant: a task holding the lock (in either
mode) through this object gets ``RuntimeError`` if it tries again.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, final

from konductor_sdk._engines.semaphore import Permit
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.sessions import DEFAULT_TTL
from konductor_sdk._kernel.validate import check_int
from konductor_sdk._lock_front import LockFront
from konductor_sdk._machines import semaphore as state

Mode = Literal["read", "write"]

__all__ = ["Mode", "RWMutex"]


@final
class RWMutex(LockFront):
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
        max_readers: int = state.RW_MAX_READERS_DEFAULT,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        check_int(max_readers, "max_readers", 1, state.RW_MAX_READERS_MAX)
        super().__init__(
            state.RWMUTEX_KIND,
            name,
            namespace=namespace,
            client=client,
            ttl=ttl,
            create_spec={"maxReaders": max_readers},
        )

    def _request_in(
        self, mode: Mode, priority: int, preemptible: bool, ttl: int | None
    ) -> dict[str, Any]:
        if mode not in ("read", "write"):
            raise ConfigurationError(f"mode must be 'read' or 'write', got {mode!r}")
        return self._request({"mode": mode}, priority, preemptible, ttl)

    def read(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        """``async with rw.read()``: hold a shared read lock for the body.

        The body is cancelled and :class:`~konductor_sdk.PermitLost` raised on exit if the
        lock ends while held (or is preempted).

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._hold(self._request_in("read", priority, preemptible, ttl))

    def write(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        """``async with rw.write()``: hold the exclusive write lock for the body.

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._hold(self._request_in("write", priority, preemptible, ttl))

    async def acquire(
        self,
        mode: Mode,
        *,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
    ) -> Permit:
        """Wait for the lock in ``mode``; held until released (or its session ends).

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        request = self._request_in(mode, priority, preemptible, ttl)
        return await self._acquire(request, nowait=False)

    async def acquire_nowait(
        self,
        mode: Mode,
        *,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
    ) -> Permit:
        """Take the lock in ``mode`` only if that is possible at once.

        Raises:
            WouldBlock: incompatible holders, or earlier/higher waiters are queued.
        """
        request = self._request_in(mode, priority, preemptible, ttl)
        return await self._acquire(request, nowait=True)

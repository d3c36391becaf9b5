"""Mutex: a cluster-wide lock, the one-permit member of the semaphore family.

::

    async with Mutex("db-migrate") as permit:    # created if missing
        await migrate(fencing_token=permit.token)

It has its own kind (``Mutex``, short name ``mtx``) so ``kubectl get mutexes`` shows who
holds what, and the same machinery as :class:`~konductor_sdk.Semaphore`: a queue of
claims, priority, preemption, a session for liveness, fencing tokens. It is not
re-entrant (see ``docs/semaphore.md``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, final

from konductor_sdk._engines.semaphore import Permit
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.sessions import DEFAULT_TTL
from konductor_sdk._lock_front import LockFront
from konductor_sdk._machines import semaphore as state

from .semaphore import TaskStack

__all__ = ["Mutex"]


@final
class Mutex(LockFront):
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
        ttl: int = DEFAULT_TTL,
    ) -> None:
        super().__init__(
            state.MUTEX_KIND, name, namespace=namespace, client=client, ttl=ttl, create_spec={}
        )
        self._stack = TaskStack()

    async def __aenter__(self) -> Permit:
        return await self._stack.enter(self.hold())

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._stack.exit(*exc_info)

    def hold(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        """``async with mutex.hold(...) as permit``: lock, hold, unlock.

        The body is cancelled and :class:`~konductor_sdk.PermitLost` raised on exit if the
        lock ends while held (or is preempted). Arguments as for ``Semaphore.hold``.

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        return self._hold(self._request({"weight": 1}, priority, preemptible, ttl))

    async def acquire(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Wait for the lock; held until ``permit.release()`` (or its session ends).

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        request = self._request({"weight": 1}, priority, preemptible, ttl)
        return await self._acquire(request, nowait=False)

    async def acquire_nowait(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Take the lock only if it is free and nobody is queued.

        Raises:
            WouldBlock: held, or others are waiting.
        """
        request = self._request({"weight": 1}, priority, preemptible, ttl)
        return await self._acquire(request, nowait=True)

    async def locked(self) -> bool:
        """Whether someone holds the lock now (a fresh read)."""
        obj = await self._object.read(fresh=True)
        return bool(state.grants(obj.status))

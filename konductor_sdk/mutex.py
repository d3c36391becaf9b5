"""Mutex: a cluster-wide lock, the one-permit member of the semaphore family.

::

    async with Mutex("db-migrate") as permit:    # created if missing; renewed while held
        await migrate(fencing_token=permit.token)

It has its own kind (``Mutex``, short name ``mtx``) so ``kubectl get mutexes`` shows who
holds what, and the same machinery as :class:`~konductor_sdk.Semaphore`: priority queue,
preemption, TTL with renewal, fencing tokens. It is not re-entrant (see ``docs/semaphore.md``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, final

import anyio

from . import _semaphore_state as state
from ._client import Client
from ._names import check_object_name
from ._semaphore_engine import Permit, Pool, check_ttl
from .semaphore import (
    DEFAULT_TTL,
    SemaphoreStatistics,
    SemaphoreStatus,
    TaskStack,
    check_namespace,
    statistics_of,
    status_of,
)

__all__ = ["Mutex"]


class Owners:
    """Which tasks of this process hold a lock through one front object.

    A task that acquires a lock it already holds would wait for itself forever; like
    ``anyio.Lock`` we raise instead. Only this front object in this process is checked:
    two front objects (or two processes) for the same lock are separate holders.
    """

    def __init__(self, what: object) -> None:
        self._what = what
        self._held: dict[int, list[Permit]] = {}

    def check(self) -> None:
        task = anyio.get_current_task().id
        live = [p for p in self._held.get(task, []) if not p.released and not p.lost]
        if live:
            raise RuntimeError(
                f"{self._what!r} is already held by this task (token {live[0].token}); "
                "it is not re-entrant"
            )
        self._held.pop(task, None)

    def add(self, permit: Permit) -> None:
        if len(self._held) > 64:
            # Tasks that ended after an explicit acquire/release leave lists behind.
            self._held = {
                task: live
                for task, held in self._held.items()
                if (live := [p for p in held if not p.released and not p.lost])
            }
        self._held.setdefault(anyio.get_current_task().id, []).append(permit)

    def discard(self, permit: Permit) -> None:
        task = anyio.get_current_task().id
        held = self._held.get(task, [])
        if permit in held:
            held.remove(permit)
        if not held:
            self._held.pop(task, None)

    @asynccontextmanager
    async def hold(self, cm: AbstractAsyncContextManager[Permit]) -> AsyncIterator[Permit]:
        self.check()
        async with cm as permit:
            self.add(permit)
            try:
                yield permit
            finally:
                self.discard(permit)

    async def acquire(self, acquire: Callable[[], Awaitable[Permit]]) -> Permit:
        self.check()
        permit = await acquire()
        self.add(permit)
        return permit


@final
class Mutex:
    """A lock stored in a ``Mutex`` custom resource (created if missing).

    Args:
        name: the object's name (DNS subdomain).
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: seconds the holder may go without renewal (renewed every ``ttl/3``);
            0: held until released or the pod ends (only in a pod).

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
        check_object_name(name)
        check_namespace(namespace)
        self._pool = Pool(
            state.MUTEX_FLAVOR,
            name,
            namespace=namespace,
            client=client,
            ttl=check_ttl(ttl),
            create_spec={},
        )
        self._owners = Owners(self)
        self._stack = TaskStack()

    def __repr__(self) -> str:
        return f"<Mutex {self._pool.namespace or '(default)'}/{self.name}>"

    @property
    def name(self) -> str:
        return self._pool.name

    @property
    def namespace(self) -> str | None:
        return self._pool.namespace or None

    async def __aenter__(self) -> Permit:
        return await self._stack.enter(self.hold())

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._stack.exit(*exc_info)

    def _kwargs(self, priority: int, preemptible: bool, ttl: int | None) -> dict[str, Any]:
        self._pool.check_args(priority, ttl)
        return {
            "fields": {"weight": 1},
            "priority": priority,
            "preemptible": preemptible,
            "ttl": ttl,
            "allow_burst": False,
        }

    def hold(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        """``async with mutex.hold(...) as permit``: lock, renew while held, unlock.

        The body is cancelled and :class:`~konductor_sdk.PermitLost` raised on exit if the
        lock ends while held (or is preempted). Arguments as for ``Semaphore.hold``.

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        kwargs = self._kwargs(priority, preemptible, ttl)
        return self._owners.hold(self._pool.hold(**kwargs, nowait=False))

    async def acquire(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Wait for the lock; renewed in the background until ``permit.release()``.

        Raises:
            ConfigurationError: bad arguments.
            RuntimeError: this task already holds the lock through this object.
        """
        kwargs = self._kwargs(priority, preemptible, ttl)
        return await self._owners.acquire(
            partial(self._pool.acquire, **kwargs, nowait=False, background=True)
        )

    async def acquire_nowait(
        self, *, priority: int = 0, preemptible: bool = False, ttl: int | None = None
    ) -> Permit:
        """Take the lock only if it is free and nobody is queued.

        Raises:
            WouldBlock: held, or others are waiting.
        """
        kwargs = self._kwargs(priority, preemptible, ttl)
        return await self._owners.acquire(
            partial(self._pool.acquire, **kwargs, nowait=True, background=True)
        )

    async def locked(self) -> bool:
        """Whether someone holds the lock now (a fresh read)."""
        obj = await self._pool.read(fresh=True)
        return bool(obj.status.get("holders"))

    async def create(self) -> SemaphoreStatus:
        """Create the object. Raises ``AlreadyExistsError`` if it exists."""
        return status_of(self._pool, await self._pool.create({}))

    async def delete(self) -> None:
        """Delete the object; a holder's lock is lost, waiters fail."""
        await self._pool.delete()

    async def status(self) -> SemaphoreStatus:
        return status_of(self._pool, await self._pool.read(fresh=True))

    async def force_release(self, who: str) -> tuple[str, ...]:
        """Remove the holder by acquisition key or holder id; returns the removed keys."""
        return await self._pool.force_release(who)

    def statistics(self) -> SemaphoreStatistics:
        return statistics_of(self._pool)

"""What the primitives' front classes share: naming, connecting and the admin methods.

* :class:`LockFront`: :class:`~konductor_sdk.Mutex` and :class:`~konductor_sdk.RWMutex`, a
  :class:`~konductor_sdk._semaphore_engine.Pool` behind a lock-shaped front that refuses
  re-entry (:class:`Owners`); ``create``/``delete``/``status``/``force_release``/``statistics``.

(The front of one-object primitives, ``ObjectFront``, is in :mod:`konductor_sdk._object_front`.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import anyio

from konductor_sdk._engines.semaphore import Permit, Pool, check_ttl
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._machines import semaphore as state
from konductor_sdk.semaphore import (
    SemaphoreStatistics,
    SemaphoreStatus,
    changes_of,
    check_namespace,
    statistics_of,
    status_of,
)

__all__ = ["LockFront", "Owners"]


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


class LockFront:
    """A lock of the semaphore family: its pool, its owners and its admin methods.

    Args:
        flavor: the kind's flavor (``state.MUTEX_FLAVOR``, ``state.RWMUTEX_FLAVOR``).
        name: the object's name (DNS subdomain).
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: seconds a holder may go without renewal.
        create_spec: the spec to create the object with if it does not exist.

    Raises:
        ConfigurationError: an argument is out of range (nothing is written).
    """

    def __init__(
        self,
        flavor: state.Flavor,
        name: str,
        *,
        namespace: str | None,
        client: Client | None,
        ttl: int,
        create_spec: dict[str, Any],
    ) -> None:
        check_object_name(name)
        check_namespace(namespace)
        self._pool = Pool(
            flavor,
            name,
            namespace=namespace,
            client=client,
            ttl=check_ttl(ttl),
            create_spec=create_spec,
        )
        self._owners = Owners(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._pool.namespace or '(default)'}/{self.name}>"

    @property
    def name(self) -> str:
        return self._pool.name

    @property
    def namespace(self) -> str | None:
        return self._pool.namespace or None

    def _request(
        self, fields: dict[str, Any], priority: int, preemptible: bool, ttl: int | None
    ) -> dict[str, Any]:
        """The pool's keyword arguments for one acquisition (validated: no I/O if bad)."""
        self._pool.check_args(priority, ttl)
        return {
            "fields": fields,
            "priority": priority,
            "preemptible": preemptible,
            "ttl": ttl,
            "allow_burst": False,
        }

    def _hold(self, request: dict[str, Any]) -> AbstractAsyncContextManager[Permit]:
        return self._owners.hold(self._pool.hold(**request, nowait=False))

    async def _acquire(self, request: dict[str, Any], *, nowait: bool) -> Permit:
        return await self._owners.acquire(
            partial(self._pool.acquire, **request, nowait=nowait, background=True)
        )

    async def create(self) -> SemaphoreStatus:
        """Create the object. Raises ``AlreadyExistsError`` if it exists."""
        spec = self._pool.create_spec or {}
        return status_of(self._pool, await self._pool.create(spec))

    async def delete(self) -> None:
        """Delete the object; holders' locks are lost, waiters fail."""
        await self._pool.delete()

    async def status(self) -> SemaphoreStatus:
        """A fresh snapshot (an RWMutex's holders carry ``mode``)."""
        return status_of(self._pool, await self._pool.read(fresh=True))

    async def force_release(self, who: str) -> tuple[str, ...]:
        """Remove holders by acquisition key or holder id; returns the removed keys."""
        return await self._pool.force_release(who)

    def changes(self) -> AsyncIterator[SemaphoreStatus]:
        """The status now and after every change, from the shared watch (see
        :meth:`konductor_sdk.Semaphore.changes`)."""
        return changes_of(self._pool)

    def statistics(self) -> SemaphoreStatistics:
        return statistics_of(self._pool)

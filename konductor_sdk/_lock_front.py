"""The lock-shaped front of the semaphore family, shared by Mutex and RWMutex.

A :class:`LockFront` is one :class:`~konductor_sdk._engines.semaphore.SemaphoreObject`
behind a front that refuses re-entry by the task already holding it
(:class:`ReentryGuard`), plus the admin methods (``create``, ``delete``, ``status``,
``force_release``, ``statistics``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import anyio

from konductor_sdk._engines.semaphore import Permit, SemaphoreObject
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.validate import check_ttl
from konductor_sdk._machines.semaphore import LockKind
from konductor_sdk.semaphore import (
    SemaphoreStatistics,
    SemaphoreStatus,
    changes_of,
    check_namespace,
    read_status,
    statistics_of,
    status_of,
)

__all__ = ["LockFront", "ReentryGuard"]


class ReentryGuard:
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
    """A lock of the semaphore family: its object, its re-entry guard, its admin methods.

    Args:
        kind: ``MUTEX_KIND`` or ``RWMUTEX_KIND``.
        name: the object's name (DNS subdomain).
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: the session TTL of its grants (0: until released or the pod ends).
        create_spec: the spec to create the object with if it does not exist.

    Raises:
        ConfigurationError: an argument is out of range (nothing is written).
    """

    def __init__(
        self,
        kind: LockKind,
        name: str,
        *,
        namespace: str | None,
        client: Client | None,
        ttl: int,
        create_spec: dict[str, Any],
    ) -> None:
        check_object_name(name)
        check_namespace(namespace)
        self._object = SemaphoreObject(
            kind,
            name,
            namespace=namespace,
            client=client,
            ttl=check_ttl(ttl, allow_zero=True),
            create_spec=create_spec,
        )
        self._guard = ReentryGuard(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._object.namespace or '(default)'}/{self.name}>"

    @property
    def name(self) -> str:
        return self._object.name

    @property
    def namespace(self) -> str | None:
        return self._object.namespace or None

    def _request(
        self, fields: dict[str, Any], priority: int, preemptible: bool, ttl: int | None
    ) -> dict[str, Any]:
        """The engine's keyword arguments for one acquisition (validated: no I/O if bad)."""
        self._object.check_args(priority, ttl)
        return {
            "fields": fields,
            "priority": priority,
            "preemptible": bool(preemptible),
            "ttl": ttl,
            "allow_burst": False,
        }

    def _hold(self, request: dict[str, Any]) -> AbstractAsyncContextManager[Permit]:
        return self._guard.hold(self._object.hold(**request, nowait=False))

    async def _acquire(self, request: dict[str, Any], *, nowait: bool) -> Permit:
        return await self._guard.acquire(partial(self._object.acquire, **request, nowait=nowait))

    async def create(self) -> SemaphoreStatus:
        """Create the object. Raises ``AlreadyExistsError`` if it exists."""
        spec = self._object.create_spec or {}
        return status_of(self._object, await self._object.create(spec), [])

    async def delete(self) -> None:
        """Delete the object; holders' locks are lost, waiters fail."""
        await self._object.delete()

    async def status(self) -> SemaphoreStatus:
        """A fresh snapshot (an RWMutex's holders carry ``mode``)."""
        return await read_status(self._object)

    async def force_release(self, who: str) -> tuple[str, ...]:
        """Remove grants by key (``slot#token``), first slot, holder id or session name;
        returns the removed keys."""
        return await self._object.force_release(who)

    def changes(self) -> AsyncIterator[SemaphoreStatus]:
        """The status now and after every change, from the shared watches (see
        :meth:`konductor_sdk.Semaphore.changes`)."""
        return changes_of(self._object)

    def statistics(self) -> SemaphoreStatistics:
        """Counters of this process's use of the lock (no I/O)."""
        return statistics_of(self._object)

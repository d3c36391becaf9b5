"""Blocking Semaphore, Mutex and RWMutex for scripts.

::

    from konductor_sdk.sync import Semaphore

    with Semaphore("gpu-pool", permits=4) as permit:
        train(fencing_token=permit.token)

Each call runs the async implementation on the shared portal loop (see ``_portal``), where
the permit is also renewed while the calling thread works. A blocking body cannot be
cancelled from outside, so a permit lost while held (or preempted) is reported by
``permit.lost`` / ``permit.preempt_requested`` during the body and by
:class:`~konductor_sdk.PermitLost` raised when the ``with`` block ends. Ctrl-C while
waiting leaves the queue, as cancellation does in the async API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, final

from konductor_sdk._engines.semaphore import Permit as AsyncPermit
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import PermitLost
from konductor_sdk._machines import semaphore as state

from ..mutex import Mutex as AsyncMutex
from ..rwmutex import Mode
from ..rwmutex import RWMutex as AsyncRWMutex
from ..semaphore import DEFAULT_TTL, SemaphoreStatistics, SemaphoreStatus
from ..semaphore import Semaphore as AsyncSemaphore
from ._portal import run

__all__ = ["Mutex", "Permit", "RWMutex", "Semaphore"]


@final
class Permit:
    """Blocking view of a held permit (see the async ``Permit``)."""

    def __init__(self, permit: AsyncPermit) -> None:
        self._permit = permit

    def __repr__(self) -> str:
        return repr(self._permit)

    @property
    def key(self) -> str:
        return self._permit.key

    @property
    def token(self) -> int:
        """The fencing token of this grant."""
        return self._permit.token

    @property
    def weight(self) -> int:
        return self._permit.weight

    @property
    def mode(self) -> str | None:
        return self._permit.mode

    @property
    def burst(self) -> bool:
        return self._permit.burst

    @property
    def lost(self) -> bool:
        return self._permit.lost

    @property
    def lost_reason(self) -> str | None:
        return self._permit.lost_reason

    @property
    def preempt_requested(self) -> bool:
        """True once a higher-priority waiter asked this holder to yield."""
        return self._permit.preempt_requested.is_set()

    @property
    def released(self) -> bool:
        return self._permit.released

    def release(self) -> None:
        """Give the units back (idempotent)."""
        run(self._permit.release)


class _ThreadOwners:
    """Re-entrancy check for locks: blocking calls of one thread run in different loop
    tasks, so the async check (per task) cannot see them; this one is per thread."""

    def __init__(self, what: object) -> None:
        self._what = what
        self._local = threading.local()

    def check(self) -> None:
        live = [p for p in getattr(self._local, "held", []) if not p.released and not p.lost]
        if live:
            raise RuntimeError(f"{self._what!r} is already held by this thread; not re-entrant")
        self._local.held = []

    def add(self, permit: Permit) -> None:
        self._local.held = [*getattr(self._local, "held", []), permit]


@contextmanager
def _holding(acquire: Callable[[], Permit]) -> Iterator[Permit]:
    permit = acquire()
    try:
        yield permit
    finally:
        permit.release()
    if permit.lost:
        raise PermitLost(f"{permit!r} ended while held: {permit.lost_reason}")


class _Stack:
    """``with obj:`` usable from many threads: one context per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def enter(self, cm: AbstractContextManager[Permit]) -> Permit:
        permit = cm.__enter__()
        self._local.cms = [*getattr(self._local, "cms", []), cm]
        return permit

    def exit(self, *exc_info: Any) -> bool | None:
        cm = self._local.cms.pop()
        suppress: bool | None = cm.__exit__(*exc_info)
        return suppress


@final
class Semaphore:
    """Blocking twin of :class:`konductor_sdk.Semaphore` (same arguments)."""

    def __init__(
        self,
        name: str,
        *,
        permits: int | None = None,
        burst: int = 0,
        burst_seconds: int = state.BURST_SECONDS_DEFAULT,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self._sem = AsyncSemaphore(
            name,
            permits=permits,
            burst=burst,
            burst_seconds=burst_seconds,
            namespace=namespace,
            client=client,
            ttl=ttl,
        )
        self._stack = _Stack()

    def __repr__(self) -> str:
        return repr(self._sem)

    @property
    def name(self) -> str:
        return self._sem.name

    def __enter__(self) -> Permit:
        return self._stack.enter(self.hold())

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._stack.exit(*exc_info)

    def hold(self, **kwargs: Any) -> AbstractContextManager[Permit]:
        """``with sem.hold(weight=2) as permit:`` (arguments as the async ``hold``)."""
        self._sem._kwargs(**_defaults(kwargs))  # validate now, before any I/O
        return _holding(lambda: self.acquire(**kwargs))

    def acquire(self, **kwargs: Any) -> Permit:
        """Block until granted; renewed in the background until ``permit.release()``."""
        return Permit(run(lambda: self._sem.acquire(**kwargs)))

    def acquire_nowait(self, **kwargs: Any) -> Permit:
        """Raises ``WouldBlock`` instead of waiting."""
        return Permit(run(lambda: self._sem.acquire_nowait(**kwargs)))

    def create(self, **kwargs: Any) -> SemaphoreStatus:
        return run(lambda: self._sem.create(**kwargs))

    def delete(self) -> None:
        run(self._sem.delete)

    def status(self) -> SemaphoreStatus:
        return run(self._sem.status)

    def set_permits(self, permits: int, **kwargs: Any) -> SemaphoreStatus:
        return run(lambda: self._sem.set_permits(permits, **kwargs))

    def force_release(self, who: str) -> tuple[str, ...]:
        return run(self._sem.force_release, who)

    def statistics(self) -> SemaphoreStatistics:
        return self._sem.statistics()


def _defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {"weight": 1, "priority": 0, "preemptible": False, "ttl": None, "burst": False}
    out.update(kwargs)
    return out


@final
class Mutex:
    """Blocking twin of :class:`konductor_sdk.Mutex` (same arguments)."""

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self._mutex = AsyncMutex(name, namespace=namespace, client=client, ttl=ttl)
        self._owners = _ThreadOwners(self)
        self._stack = _Stack()

    def __repr__(self) -> str:
        return repr(self._mutex)

    @property
    def name(self) -> str:
        return self._mutex.name

    def __enter__(self) -> Permit:
        return self._stack.enter(self.hold())

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._stack.exit(*exc_info)

    def hold(self, **kwargs: Any) -> AbstractContextManager[Permit]:
        """``with mutex.hold(priority=1):`` (arguments as the async ``hold``)."""
        return _holding(lambda: self.acquire(**kwargs))

    def acquire(self, **kwargs: Any) -> Permit:
        self._owners.check()
        permit = Permit(run(lambda: self._mutex.acquire(**kwargs)))
        self._owners.add(permit)
        return permit

    def acquire_nowait(self, **kwargs: Any) -> Permit:
        self._owners.check()
        permit = Permit(run(lambda: self._mutex.acquire_nowait(**kwargs)))
        self._owners.add(permit)
        return permit

    def locked(self) -> bool:
        return run(self._mutex.locked)

    def create(self) -> SemaphoreStatus:
        return run(self._mutex.create)

    def delete(self) -> None:
        run(self._mutex.delete)

    def status(self) -> SemaphoreStatus:
        return run(self._mutex.status)

    def force_release(self, who: str) -> tuple[str, ...]:
        return run(self._mutex.force_release, who)

    def statistics(self) -> SemaphoreStatistics:
        return self._mutex.statistics()


@final
class RWMutex:
    """Blocking twin of :class:`konductor_sdk.RWMutex` (same arguments)."""

    def __init__(
        self,
        name: str,
        *,
        max_readers: int = state.RW_MAX_READERS_DEFAULT,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self._rw = AsyncRWMutex(
            name, max_readers=max_readers, namespace=namespace, client=client, ttl=ttl
        )
        self._owners = _ThreadOwners(self)

    def __repr__(self) -> str:
        return repr(self._rw)

    @property
    def name(self) -> str:
        return self._rw.name

    def read(self, **kwargs: Any) -> AbstractContextManager[Permit]:
        """``with rw.read():`` a shared lock for the block."""
        return _holding(lambda: self.acquire("read", **kwargs))

    def write(self, **kwargs: Any) -> AbstractContextManager[Permit]:
        """``with rw.write():`` the exclusive lock for the block."""
        return _holding(lambda: self.acquire("write", **kwargs))

    def acquire(self, mode: Mode, **kwargs: Any) -> Permit:
        self._owners.check()
        permit = Permit(run(lambda: self._rw.acquire(mode, **kwargs)))
        self._owners.add(permit)
        return permit

    def acquire_nowait(self, mode: Mode, **kwargs: Any) -> Permit:
        self._owners.check()
        permit = Permit(run(lambda: self._rw.acquire_nowait(mode, **kwargs)))
        self._owners.add(permit)
        return permit

    def create(self) -> SemaphoreStatus:
        return run(self._rw.create)

    def delete(self) -> None:
        run(self._rw.delete)

    def status(self) -> SemaphoreStatus:
        return run(self._rw.status)

    def force_release(self, who: str) -> tuple[str, ...]:
        return run(self._rw.force_release, who)

    def statistics(self) -> SemaphoreStatistics:
        return self._rw.statistics()

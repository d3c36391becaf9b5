"""Blocking twins of :mod:`konductor_sdk.semaphore` (generated, do not edit).

Semaphore: weighted permits shared by every process of a cluster.

::

    sem = Semaphore("gpu-pool", permits=4)       # created with permits=4 if missing
    with sem as permit:                          # one unit, for the block
        fence.admit(permit.fencing)              # per-slot fencing downstream
    with sem.hold(weight=2, priority=5):         # two units, served before priority < 5
        ...
    permit = sem.acquire_nowait()                # WouldBlock instead of waiting
    permit.release()

Safety never depends on the operator: grants are conditional writes the API server checks
(the limit, non-overlapping slots, the fencing counter). Semantics (fairness, preemption,
burst, sessions, fencing) are in ``docs/semaphore.md``.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import final

from konductor_sdk import FencingToken
from konductor_sdk import semaphore as _semaphore
from konductor_sdk.semaphore import HolderInfo as HolderInfo
from konductor_sdk.semaphore import SemaphoreStatistics as SemaphoreStatistics
from konductor_sdk.semaphore import SemaphoreStatus as SemaphoreStatus
from konductor_sdk.semaphore import WaiterInfo as WaiterInfo

from . import _context, _portal, _twin
from ._twin import Event
from .client import Client

__all__ = [
    "HolderInfo",
    "Permit",
    "Semaphore",
    "SemaphoreStatistics",
    "SemaphoreStatus",
    "WaiterInfo",
]


@final
class Permit(_twin.Twin[_semaphore.Permit]):
    """A grant held by this process: what ``Semaphore.acquire()`` returns.

    Attributes:
        key: ``"<first slot>#<token>"``: names exactly this grant (``force_release``,
            ``koncli ... release``).
        slot: the first slot; :attr:`slots` are all of them.
        token: the fencing token: strictly increasing per object across all grants.
        fencing: what to present to a fenced resource (:class:`~konductor_sdk.Fence`):
            the object, the slots and the token.
        weight: units held. ``mode``: ``"read"``/``"write"`` for an RWMutex.
        burst: granted from burst capacity (lasts at most ``ttl_seconds``).
        ttl_seconds: the session's TTL (0: held until released or the pod ends), or the
            time bound of a burst grant.
        session: the name of the Session this grant lives and dies with.
        preempt_requested: set when a higher-priority waiter asked this holder to yield.
    """

    @property
    def slot(self) -> int:
        return self._async.slot

    slots = _twin.attribute(_semaphore.Permit, lambda a: a.slots)

    @property
    def token(self) -> int:
        return self._async.token

    key = _twin.attribute(_semaphore.Permit, lambda a: a.key)

    @property
    def weight(self) -> int:
        return self._async.weight

    @property
    def mode(self) -> str | None:
        return self._async.mode

    @property
    def burst(self) -> bool:
        return self._async.burst

    @property
    def fencing(self) -> FencingToken:
        return self._async.fencing

    session = _twin.attribute(_semaphore.Permit, lambda a: a.session)

    ttl_seconds = _twin.attribute(_semaphore.Permit, lambda a: a.ttl_seconds)

    @property
    def preempt_requested(self) -> Event:
        return _twin.Event(self._async.preempt_requested)

    @property
    def granted_rv(self) -> int:
        return self._async.granted_rv

    @property
    def claim(self) -> str | None:
        return self._async.claim

    @property
    def deadline(self) -> float | None:
        """Monotonic time (client clock) after which the grant must not be trusted: its
        session's deadline, or its own bound if earlier; ``None`` for a pod-bound grant.
        """
        return self._async.deadline

    @property
    def lost(self) -> bool:
        """True once the grant ended while held: its session or own deadline passed (read
        from the clock now), it was removed from the object, or the object was deleted.
        """
        return self._async.lost

    @property
    def lost_reason(self) -> str | None:
        return self._async.lost_reason

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called (or the ``with`` block ended)."""
        return self._async.released

    def wait_lost(self) -> str:
        """Wait until the permit is lost; returns the reason."""
        return _portal.run(self._async.wait_lost)

    def on_end(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` once if the grant is lost, or a preemption request
        arrives, while held (the ``with`` form cancels its body there).
        """
        _portal.call(self._async.on_end, listener)

    def mark_lost(self, reason: str) -> None:
        _portal.call(self._async.mark_lost, reason)

    def mark_preempted(self) -> None:
        _portal.call(self._async.mark_preempted)

    def set_deadline(self, deadline: float) -> None:
        """Bound the grant in time (a holder yielding to preemption)."""
        _portal.call(self._async.set_deadline, deadline)

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, when the grant is released or found removed."""
        _portal.call(self._async.when_done, callback)

    def done(self) -> None:
        _portal.call(self._async.done)

    def release(self) -> None:
        """Give the units back (idempotent; shielded from cancellation, bounded in time).

        Raises:
            APIError: the server could not be told; the grant ends with its session.
        """
        _portal.run(self._async.release)


@final
class Semaphore(_context.BlockingContext, _twin.Twin[_semaphore.Semaphore]):
    """A counting semaphore stored in a ``Semaphore`` custom resource.

    Args:
        name: the object's name (DNS subdomain).
        permits: ``spec.permits`` to create the object with if it does not exist;
            ``None``: it must exist (``NotFoundError`` otherwise). An existing object
            keeps its own spec.
        burst: ``spec.burst`` when creating: extra units for time-bounded burst grants.
        burst_seconds: ``spec.burstSeconds`` when creating: the longest a burst grant lasts.
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: seconds of the session a grant lives with: if this process stops renewing its
            session (it died, froze, lost the network) for that long, its grants are reaped.
            0: held until released or the pod ends (only in a pod).

    Raises:
        ConfigurationError: an argument is out of range (nothing is written).
    """

    def __init__(
        self,
        name: str,
        *,
        permits: int | None = None,
        burst: int = 0,
        burst_seconds: int = 60,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = 30,
    ) -> None:
        self._bind(
            _portal.call(
                _semaphore.Semaphore,
                name,
                permits=permits,
                burst=burst,
                burst_seconds=burst_seconds,
                namespace=namespace,
                client=_twin.unwrap(client),
                ttl=ttl,
            )
        )

    @property
    def name(self) -> str:
        return self._async.name

    @property
    def namespace(self) -> str | None:
        """The namespace, once known (given, or learnt from the client on first use)."""
        return self._async.namespace

    def __enter__(self) -> Permit:
        return self._enter_block(_context.blocking(self._async, Permit._wrap))

    def hold(
        self,
        *,
        weight: int = 1,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
        burst: bool = False,
    ) -> AbstractContextManager[Permit]:
        """``with sem.hold(...) as permit``: acquire, hold, release.

        If the permit ends while held (its session ended, it was force-released or
        reaped, the object was deleted) or a higher-priority waiter preempts it, the body
        is cancelled and :class:`~konductor_sdk.PermitLost` is raised on exit.

        Args:
            weight: units to take, 1..limit (adjacent slots).
            priority: higher is served first, in [-1000000, 1000000].
            preemptible: a waiter of higher priority may ask this holder to yield.
            ttl: the session TTL for this acquisition (default: the semaphore's).
            burst: accept a burst grant (``spec.burst`` units beyond the limit, lasting
                at most ``min(ttl, spec.burstSeconds)``) when the limit is full.

        Raises:
            ConfigurationError: bad arguments, or a weight that can never fit.
        """
        return _context.blocking(
            _portal.call(
                self._async.hold,
                weight=weight,
                priority=priority,
                preemptible=preemptible,
                ttl=ttl,
                burst=burst,
            ),
            Permit._wrap,
        )

    def acquire(
        self,
        *,
        weight: int = 1,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
        burst: bool = False,
    ) -> Permit:
        """Wait for ``weight`` units; held until :meth:`Permit.release` (or until the
        session ends: loss is reported on ``permit.lost``/``wait_lost()``).

        Arguments as for :meth:`hold`. Cancelling the call leaves the queue, and releases
        a permit granted just before the cancellation.

        Raises:
            ConfigurationError: bad arguments, or a weight that can never fit.
            NotFoundError: the object does not exist (and ``permits`` was not given), or
                was deleted while waiting.
        """
        return Permit._wrap(
            _portal.run(
                self._async.acquire,
                weight=weight,
                priority=priority,
                preemptible=preemptible,
                ttl=ttl,
                burst=burst,
            )
        )

    def acquire_nowait(
        self,
        *,
        weight: int = 1,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
        burst: bool = False,
    ) -> Permit:
        """Like :meth:`acquire`, but only if the grant can be made at once (nothing is
        written otherwise).

        Raises:
            WouldBlock: not enough free units, or others are queued.
        """
        return Permit._wrap(
            _portal.run(
                self._async.acquire_nowait,
                weight=weight,
                priority=priority,
                preemptible=preemptible,
                ttl=ttl,
                burst=burst,
            )
        )

    def create(
        self,
        *,
        permits: int | None = None,
        burst: int | None = None,
        burst_seconds: int | None = None,
    ) -> SemaphoreStatus:
        """Create the object (defaults: the constructor's values).

        Raises:
            ConfigurationError: no ``permits`` here nor in the constructor, or out of range.
            AlreadyExistsError: it exists already.
        """
        return _portal.run(
            self._async.create, permits=permits, burst=burst, burst_seconds=burst_seconds
        )

    def delete(self) -> None:
        """Delete the object; every holder's permit is lost, every waiter fails."""
        _portal.run(self._async.delete)

    def status(self) -> SemaphoreStatus:
        """A fresh snapshot from the server (the object and its queue)."""
        return _portal.run(self._async.status)

    def set_permits(
        self, permits: int, *, burst: int | None = None, burst_seconds: int | None = None
    ) -> SemaphoreStatus:
        """Change ``spec.permits`` (and optionally the burst settings).

        Waiters that now fit see the change on their watch and are granted at once.
        Lowering the limit revokes nothing: it only stops new grants until enough units
        are released.
        """
        return _portal.run(
            self._async.set_permits, permits, burst=burst, burst_seconds=burst_seconds
        )

    def force_release(self, who: str) -> tuple[str, ...]:
        """Remove grants by key (``slot#token``), first slot, holder id or session name
        (admin/CLI); returns the removed keys.

        The affected holders see their permits lost (their ``with`` body is
        cancelled). Removing another user's grant needs the ``override`` verb. The
        operator does the same automatically when a holder's session ends.
        """
        return _portal.run(self._async.force_release, who)

    def changes(self) -> Iterator[SemaphoreStatus]:
        """``for status in sem.changes():`` the status now and after every change
        (grants, releases, queueing), from the client's shared watches; a consumer that is
        busy sees the latest state, not every intermediate one.

        Raises:
            NotFoundError: the object does not exist, or was deleted.
            APIError: a watch failed (``ForbiddenError``, ``UnreachableError``).
        """
        return _twin.BlockingIterator(_portal.call(self._async.changes), _twin.same)

    def statistics(self) -> SemaphoreStatistics:
        """Counters of this process's use of the object (no I/O)."""
        return _portal.call(self._async.statistics)

"""Blocking twins of :mod:`konductor_sdk.semaphore` (generated, do not edit).

Semaphore: weighted permits shared by every process of a cluster.

::

    sem = Semaphore("gpu-pool", permits=4)       # created with permits=4 if missing
    with sem as permit:                          # one unit; renewed while held
        train(fencing_token=permit.token)
    with sem.hold(weight=2, priority=5):         # two units, served before priority < 5
        ...
    permit = sem.acquire_nowait()                # WouldBlock instead of waiting
    permit.release()

Safety never depends on the operator: grants are compare-and-swap writes that keep the sum
of held weights within ``spec.permits`` (``+ spec.burst`` only for time-bounded burst
grants). The full semantics (fairness, preemption, burst, TTL, re-entrancy) are in
``docs/semaphore.md``.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import final

from konductor_sdk import semaphore as _semaphore
from konductor_sdk._kernel.entries import Renewal
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
    """A grant held by this process: what :meth:`Semaphore.acquire` returns.

    Attributes:
        key: the acquisition key (the map key under ``status.holders``).
        token: the fencing token: strictly increasing per object across all grants;
            pass it to downstream systems so they can reject stale holders.
        weight: units held.
        burst: granted from burst capacity (lasts at most ``ttl_seconds``, not renewed).
        ttl_seconds: the entry's TTL (0: until released or the pod ends).
        preempt_requested: set when a higher-priority waiter asked this holder to yield.
    """

    @property
    def key(self) -> str:
        return self._async.key

    @property
    def token(self) -> int:
        return self._async.token

    weight = _twin.attribute(_semaphore.Permit, lambda a: a.weight)

    @property
    def mode(self) -> str | None:
        return self._async.mode

    @property
    def burst(self) -> bool:
        return self._async.burst

    @property
    def ttl_seconds(self) -> int:
        return self._async.ttl_seconds

    @property
    def preempt_requested(self) -> Event:
        return _twin.Event(self._async.preempt_requested)

    @property
    def renewal(self) -> Renewal | None:
        return self._async.renewal

    @property
    def lost(self) -> bool:
        """True once the permit ended while held (TTL, reaped, removed, preempted-and-expired)."""
        return self._async.lost

    @property
    def lost_reason(self) -> str | None:
        return self._async.lost_reason

    @property
    def deadline(self) -> float | None:
        """Monotonic time (client clock) after which the permit counts as lost if not renewed."""
        return self._async.deadline

    def wait_lost(self) -> str:
        """Wait until the permit is lost; returns the reason."""
        return _portal.run(self._async.wait_lost)

    def release(self) -> None:
        """Give the units back (idempotent; shielded from cancellation, bounded in time).

        Raises:
            APIError: the server could not be told; the entry expires by its TTL.
        """
        _portal.run(self._async.release)

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called (or the ``with`` block ended)."""
        return self._async.released


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
        ttl: seconds a holder or waiter may go without renewal before it can be reaped
            (renewed every ``ttl/3`` while held); 0: held until released or the pod ends
            (only in a pod).

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
        """``with sem.hold(...) as permit``: acquire, renew while held, release.

        If the permit ends while held (renewal impossible before its TTL, removed by an
        admin, object deleted) or a higher-priority waiter preempts it, the body is
        cancelled and :class:`~konductor_sdk.PermitLost` is raised on exit.

        Args:
            weight: units to take, 1..limit.
            priority: higher is served first, in [-1000000, 1000000].
            preemptible: a waiter of higher priority may ask this holder to yield.
            ttl: entry TTL in seconds (default: the semaphore's).
            burst: accept a burst grant (``spec.burst`` units beyond the limit, lasting
                at most ``min(ttl, spec.burstSeconds)``, not renewable) when the limit is
                full.

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
        """Wait for ``weight`` units; the permit is renewed in the client's background
        until :meth:`Permit.release`. Loss is reported on ``permit.lost``/``wait_lost()``.

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
        """Like :meth:`acquire`, but only if the grant can be made at once.

        Raises:
            WouldBlock: not enough free units, or earlier/higher waiters are queued.
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
        """A fresh snapshot from the server."""
        return _portal.run(self._async.status)

    def set_permits(
        self, permits: int, *, burst: int | None = None, burst_seconds: int | None = None
    ) -> SemaphoreStatus:
        """Change ``spec.permits`` (and optionally the burst settings).

        Waiters that now fit are granted at once (this call writes the settled status).
        Lowering the limit revokes nothing: it only stops new grants until enough units
        are released.
        """
        return _portal.run(
            self._async.set_permits, permits, burst=burst, burst_seconds=burst_seconds
        )

    def force_release(self, who: str) -> tuple[str, ...]:
        """Remove grants by acquisition key or holder id (admin/CLI); returns the keys.

        The affected holders see their permits lost (their ``with`` body is
        cancelled). Use it for holders you know are dead; the operator does the same
        automatically after their TTL or when their pod ends.
        """
        return _portal.run(self._async.force_release, who)

    def changes(self) -> Iterator[SemaphoreStatus]:
        """``for status in sem.changes():`` the status now and after every change
        (grants, releases, queueing), from the client's shared watch; a consumer that is
        busy sees the latest state, not every intermediate one.

        Raises:
            NotFoundError: the object does not exist, or was deleted.
            APIError: the watch failed (``ForbiddenError``, ``UnreachableError``).
        """
        return _twin.BlockingIterator(_portal.call(self._async.changes), _twin.same)

    def statistics(self) -> SemaphoreStatistics:
        return _portal.call(self._async.statistics)

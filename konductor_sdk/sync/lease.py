"""Blocking twins of :mod:`konductor_sdk.lease` (generated, do not edit).

Lease: a singleton section across processes, with fencing tokens and fast handoff.

::

    lease = Lease("scheduler", ttl=15)
    with lease as held:                 # waits, then holds; renewed in the background
        run(fencing_token=held.token)

The Lease object holds one holder entry and the fencing counter; each waiting candidate is
a ``Claim`` of its own, so any number of candidates can wait (see
:mod:`konductor_sdk._engines.lease_campaign`). A waiter takes over an unreleased lease
only after the holder's entry has not changed for its ``ttlSeconds`` on the *waiter's*
monotonic clock; the holder gives up ``safety_margin`` earlier, counted from when it *sent*
its last successful renewal, so it always stops first. Layout, guarantees and
non-guarantees: ``docs/lease.md``.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from typing import final

from konductor_sdk import FencingToken
from konductor_sdk import lease as _lease
from konductor_sdk.lease import CandidateInfo as CandidateInfo
from konductor_sdk.lease import LeaseStatistics as LeaseStatistics
from konductor_sdk.lease import LeaseStatus as LeaseStatus

from . import _context, _portal, _twin
from .client import Client
from .election import LeaderElector as LeaderElector
from .election import Term as Term

__all__ = [
    "CandidateInfo",
    "HeldLease",
    "LeaderElector",
    "Lease",
    "LeaseStatistics",
    "LeaseStatus",
    "Term",
]


@final
class HeldLease(_twin.Twin[_lease.HeldLease]):
    """One acquisition of a :class:`~konductor_sdk.lease.Lease`.

    Attributes:
        token: the fencing token of this acquisition; strictly larger than every token
            issued before on this Lease object (``uid``). Pass it (or :attr:`fencing`) to
            downstream systems and have them reject writes carrying a smaller one.
        key: the entry's key in ``status.holders``.
        holder: the identity recorded as holder.
        uid: the Lease object's uid (tokens start again on a re-created object).
        session: the name of the Session the grant lives with.
    """

    @property
    def name(self) -> str:
        return self._async.name

    @property
    def namespace(self) -> str:
        return self._async.namespace

    @property
    def key(self) -> str:
        return self._async.key

    @property
    def holder(self) -> str:
        return self._async.holder

    @property
    def token(self) -> int:
        return self._async.token

    @property
    def ttl_seconds(self) -> int:
        return self._async.ttl_seconds

    @property
    def uid(self) -> str:
        return self._async.uid

    session = _twin.attribute(_lease.HeldLease, lambda a: a.session)

    @property
    def renewals(self) -> int:
        return self._async.renewals

    @property
    def fencing(self) -> FencingToken:
        """This grant's token for :class:`konductor_sdk.Fence` (slot 0: one holder)."""
        return self._async.fencing

    @property
    def deadline(self) -> float:
        """Monotonic time (the client's clock) after which this holder stops believing it
        holds the lease, unless a renewal succeeds first.
        """
        return self._async.deadline

    @property
    def lost(self) -> bool:
        """True once the lease ended while held: its deadline passed (read from the clock
        now), it was taken, reaped or deleted, its session ended, or it yielded.
        """
        return self._async.lost

    @property
    def lost_reason(self) -> str | None:
        return self._async.lost_reason

    def release(self) -> None:
        """Give the lease up so a waiting candidate takes over at once; idempotent.

        The write is shielded from cancellation (bounded by the TTL, after which the entry
        expires anyway).

        Raises:
            APIError: the server could not be told (the entry then expires by its TTL).
        """
        _portal.run(self._async.release)


@final
class Lease(_context.BlockingContext, _twin.Twin[_lease.Lease]):
    """A named lease: at most one holder at a time, each with a strictly larger token.

    Args:
        name: the Lease object's name (created on first use with ``spec.ttlSeconds=ttl``).
        ttl: seconds the holder's entry may go without renewal before a waiter may take
            over; renewals happen every ``ttl/3``. Whole seconds in ``[1, 86400]``.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        priority: in ``[-1000000, 1000000]``; waiting candidates are served by priority,
            then first come first served, and a waiting candidate with a higher priority
            than the holder's asks it to hand over (``status.preferredHolder``).

    Raises:
        ConfigurationError: ``name``, ``ttl`` or ``priority`` out of range.
    """

    def __init__(
        self,
        name: str,
        *,
        ttl: int = 15,
        namespace: str | None = None,
        client: Client | None = None,
        priority: int = 0,
    ) -> None:
        self._bind(
            _portal.call(
                _lease.Lease,
                name,
                ttl=ttl,
                namespace=namespace,
                client=_twin.unwrap(client),
                priority=priority,
            )
        )

    @property
    def name(self) -> str:
        return self._async.name

    @property
    def ttl(self) -> int:
        return self._async.ttl

    @property
    def priority(self) -> int:
        return self._async.priority

    def create(self, *, exist_ok: bool = False) -> None:
        """Create the Lease object with ``spec.ttlSeconds = ttl``.

        Raises:
            AlreadyExistsError: it exists and ``exist_ok`` is false.
        """
        _portal.run(self._async.create, exist_ok=exist_ok)

    def delete(self) -> None:
        """Delete the Lease object (only its creator may, or a user allowed ``override``).
        A current holder learns it lost at once; fencing tokens start again from 1 on a new
        object (:attr:`HeldLease.fencing` names the object's uid).

        Raises:
            NotFoundError: there is no such lease.
        """
        _portal.run(self._async.delete)

    def status(self) -> LeaseStatus:
        """The lease as stored now (a fresh read of the object and of its candidates).

        Raises:
            NotFoundError: there is no such lease.
        """
        return _portal.run(self._async.status)

    def statistics(self) -> LeaseStatistics:
        """What this object did in this process (no I/O)."""
        return _portal.call(self._async.statistics)

    def acquire(self) -> HeldLease:
        """Wait until this process holds the lease; renewal runs in the client's background.

        Without ``with`` nothing can be cancelled for you when the lease is lost:
        check ``held.lost`` (or pass ``held.fencing`` downstream) and call
        ``held.release()``.
        """
        return HeldLease._wrap(_portal.run(self._async.acquire))

    def acquire_nowait(self) -> HeldLease:
        """Take the lease if that is possible right now.

        Raises:
            WouldBlock: it is held by someone else (not yet expired on our clock), or
                candidates are waiting ahead of us.
        """
        return HeldLease._wrap(_portal.run(self._async.acquire_nowait))

    def __enter__(self) -> HeldLease:
        return self._enter_block(_context.blocking(self._async, HeldLease._wrap))

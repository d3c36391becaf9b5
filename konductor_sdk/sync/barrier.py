"""Blocking twins of :mod:`konductor_sdk.barrier` (generated, do not edit).

Barrier: parties across the cluster wait for each other, generation after generation.

::

    barrier = Barrier("epoch", expected=8)
    rank = barrier.wait()              # arrive, then wait until the barrier opens

The barrier's status holds counters, not parties. Arriving is one CAS write of those
counters per process (the parties of a process that arrive together are combined), and the
write that brings the count to ``expected`` also writes ``phase: Open``, so a generation
opens exactly once and releasing costs one write plus one watch event. Each party's rank is
its arrival index minus the indices that left before the opening, computed by every process
alike. Who arrived, and whose session keeps them alive, is in one arrival Claim per process
batch: when a process dies, the operator withdraws its arrivals from the waiting generation.
Timeouts and the last-call window are timed by the waiters themselves on their monotonic
clocks, so a barrier never hangs because the operator is down. See ``docs/barrier.md``.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

from konductor_sdk import barrier as _barrier
from konductor_sdk.barrier import Arrival as Arrival
from konductor_sdk.barrier import BarrierStatistics as BarrierStatistics
from konductor_sdk.barrier import BarrierStatus as BarrierStatus

from . import _context, _portal, _twin
from .client import Client

__all__ = [
    "Arrival",
    "Barrier",
    "BarrierStatistics",
    "BarrierStatus",
]


@final
class Barrier(_context.BlockingContext, _twin.Twin[_barrier.Barrier]):
    """A cyclic barrier for ``expected`` parties (``threading.Barrier`` across pods).

    Args:
        name: the Barrier object's name.
        expected: parties that open it; ``None`` to join an existing barrier as it is.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        quorum: parties that open it after ``last_call`` seconds (elastic min size).
        last_call: seconds to wait for more parties once ``quorum`` arrived (needs quorum).
        timeout: seconds after a generation's first arrival before it fails, whether or not
            anyone still waits in it.
        ttl: seconds this process's session lives without renewal: a dead process's
            arrivals are withdrawn (by the operator) that long after it stopped.
        party: this party's name (default: unique per instance); should be unique among
            the parties, e.g. ``"rank-3"``. Used to name missing parties.
        labels: labels for the object when this instance creates it.

    Raises:
        ConfigurationError: an argument is out of range (nothing was written).
    """

    def __init__(
        self,
        name: str,
        *,
        expected: int | None,
        namespace: str | None = None,
        client: Client | None = None,
        quorum: int | None = None,
        last_call: float | None = None,
        timeout: float | None = None,
        ttl: float = 30,
        party: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._bind(
            _portal.call(
                _barrier.Barrier,
                name,
                expected=expected,
                namespace=namespace,
                client=_twin.unwrap(client),
                quorum=quorum,
                last_call=last_call,
                timeout=timeout,
                ttl=ttl,
                party=party,
                labels=labels,
            )
        )

    @property
    def name(self) -> str:
        return self._async.name

    KIND = _barrier.Barrier.KIND

    @property
    def party(self) -> str | None:
        """This party's name (assigned on first use if not given)."""
        return self._async.party

    def statistics(self) -> BarrierStatistics:
        """Counters of this party (no I/O)."""
        return _portal.call(self._async.statistics)

    def create(self, *, exist_ok: bool = False) -> BarrierStatus:
        """Create the Barrier object with this instance's spec.

        Args:
            exist_ok: return the existing object (with its own spec) instead of raising.

        Raises:
            ConfigurationError: this instance was made with ``expected=None``.
            AlreadyExistsError: it exists and ``exist_ok`` is false.
        """
        return _portal.run(self._async.create, exist_ok=exist_ok)

    def set_expected(self, expected: int) -> BarrierStatus:
        """Change ``spec.expected``; waiters honour it at once (raising it makes them wait
        for more parties, lowering it to the number arrived opens the barrier).

        Raises:
            ConfigurationError: ``expected`` out of range or below ``spec.quorum``.
        """
        return _portal.run(self._async.set_expected, expected)

    def status(self) -> BarrierStatus:
        """The barrier as the server has it now, with the arrivals its claims record."""
        return _portal.run(self._async.status)

    def reset(self) -> bool:
        """Fail the waiting generation (its waiters get :class:`BarrierFailed` with reason
        ``Reset``); the next arrival starts a fresh generation. ``False`` if nobody was
        waiting (or the object does not exist).

        Only the barrier's creator (or a user allowed ``override``) may reset it.
        """
        return _portal.run(self._async.reset)

    def arrive(self) -> int:
        """Record this party in the current generation (or start the next one if the
        current one has concluded); idempotent until the generation is waited for.

        Creates the object with this instance's spec if it does not exist. Parties of one
        client arriving together are recorded in one combined write. Without a following
        :meth:`wait_open` the arrival counts until the generation concludes, or until this
        process's session ends (``ttl`` after the process stopped).

        Returns:
            The generation joined.

        Raises:
            NotFoundError: the object does not exist and ``expected`` was not given.
        """
        return _portal.run(self._async.arrive)

    def leave(self) -> bool:
        """Withdraw this party's arrival while its generation still waits.

        Returns:
            Whether an arrival was withdrawn (``False`` if none, or the barrier concluded).
        """
        return _portal.run(self._async.leave)

    def wait_open(self) -> int:
        """Wait until the generation this party arrived in opens.

        Returns:
            This party's rank in the generation, ``0..arrived-1`` in arrival order.

        Raises:
            BarrierTimeout: ``spec.timeoutSeconds`` passed first (judged by a waiter or
                the operator); names who had and had not arrived.
            BarrierFailed: reset, deleted, or this party's arrival was withdrawn.
            RuntimeError: :meth:`arrive` was not called.
        """
        return _portal.run(self._async.wait_open)

    def wait(self) -> int:
        """:meth:`arrive`, then :meth:`wait_open`; returns this party's rank."""
        return _portal.run(self._async.wait)

    def __enter__(self) -> int:
        return self._enter_block(_context.blocking(self._async, _twin.same))

    def delete(self) -> bool:
        """Delete the object; ``False`` if it did not exist."""
        return _portal.run(self._async.delete)

"""Blocking twins of Barrier, Stages, Once and WaitGroup, for scripts::

    from konductor_sdk.sync.barrier import Barrier

    barrier = Barrier("epoch", expected=8)
    rank = barrier.wait()              # blocks until all 8 arrived; returns the index

Every method runs the async one in the portal's event loop (see ``_portal``), so the two
cannot drift apart, and the arrival keeps being renewed while the calling thread computes.
Interrupting a blocking wait (Ctrl-C) cancels it in the loop, which withdraws the arrival.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, final

import anyio.to_thread

from konductor_sdk._kernel.client import Client

from ..barrier import Barrier as AsyncBarrier
from ..barrier import BarrierStatistics, BarrierStatus
from ..once import Once as AsyncOnce
from ..once import OnceStatistics, OnceStatus
from ..stages import Stages as AsyncStages
from ..stages import StagesStatistics
from ..waitgroup import WaitGroup as AsyncWaitGroup
from ..waitgroup import WaitGroupStatistics, WaitGroupStatus
from . import _portal

__all__ = [
    "Barrier",
    "BarrierStatistics",
    "BarrierStatus",
    "Once",
    "OnceStatistics",
    "OnceStatus",
    "Stages",
    "StagesStatistics",
    "WaitGroup",
    "WaitGroupStatistics",
    "WaitGroupStatus",
]


@final
class Barrier:
    """A blocking handle on a barrier; arguments as :class:`konductor_sdk.barrier.Barrier`.

    ``client``, if given, must not be in use by another event loop (the portal's loop
    connects it).
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
        self._barrier = AsyncBarrier(
            name,
            expected=expected,
            namespace=namespace,
            client=client,
            quorum=quorum,
            last_call=last_call,
            timeout=timeout,
            ttl=ttl,
            party=party,
            labels=labels,
        )
        self._index: int | None = None

    def __repr__(self) -> str:
        return repr(self._barrier)

    @property
    def name(self) -> str:
        return self._barrier.name

    @property
    def party(self) -> str | None:
        return self._barrier.party

    def statistics(self) -> BarrierStatistics:
        """See :meth:`konductor_sdk.barrier.Barrier.statistics`."""
        return self._barrier.statistics()

    def wait(self) -> int:
        """Arrive and block until the barrier opens; returns this party's index."""
        return _portal.run(self._barrier.wait)

    def arrive(self) -> int:
        """Arrive without waiting; returns the generation joined."""
        return _portal.run(self._barrier.arrive)

    def wait_open(self) -> int:
        """Block until the generation arrived in opens; returns this party's index."""
        return _portal.run(self._barrier.wait_open)

    def leave(self) -> bool:
        """Withdraw this party's arrival while the barrier still waits."""
        return _portal.run(self._barrier.leave)

    def reset(self) -> bool:
        """Fail the waiting generation (its waiters get ``BarrierFailed``)."""
        return _portal.run(self._barrier.reset)

    def set_expected(self, expected: int) -> BarrierStatus:
        """Change ``spec.expected``; honoured by waiters at once."""
        return _portal.run(self._barrier.set_expected, expected)

    def status(self) -> BarrierStatus:
        """The barrier as the server has it now."""
        return _portal.run(self._barrier.status)

    def create(self, *, exist_ok: bool = False) -> BarrierStatus:
        """Create the Barrier object with this handle's spec."""
        return _portal.run(self._barrier.create, exist_ok=exist_ok)

    def delete(self) -> bool:
        """Delete the Barrier object."""
        return _portal.run(self._barrier.delete)

    def __enter__(self) -> int:
        self._index = self.wait()
        return self._index

    def __exit__(self, *exc_info: object) -> None:
        return None


@final
class Stages:
    """Blocking :class:`konductor_sdk.stages.Stages` (same arguments)."""

    def __init__(
        self,
        name: str,
        stages: Sequence[str],
        *,
        parties: int | None,
        namespace: str | None = None,
        client: Client | None = None,
        quorum: int | None = None,
        last_call: float | None = None,
        timeout: float | None = None,
        ttl: float = 30,
        party: str | None = None,
    ) -> None:
        self._stages = AsyncStages(
            name,
            stages,
            parties=parties,
            namespace=namespace,
            client=client,
            quorum=quorum,
            last_call=last_call,
            timeout=timeout,
            ttl=ttl,
            party=party,
        )

    def __repr__(self) -> str:
        return repr(self._stages)

    @property
    def stages(self) -> tuple[str, ...]:
        return self._stages.stages

    def wait(self, stage: str) -> int:
        """Arrive at ``stage`` and block until it opens; returns this party's index."""
        return _portal.run(self._stages.wait, stage)

    def status(self) -> tuple[BarrierStatus, ...]:
        """Every stage's status, in order."""
        return _portal.run(self._stages.status)

    def create(self, *, exist_ok: bool = False) -> tuple[BarrierStatus, ...]:
        """Create every stage's Barrier object."""
        return _portal.run(self._stages.create, exist_ok=exist_ok)

    def delete(self) -> int:
        """Delete every stage's object."""
        return _portal.run(self._stages.delete)

    def statistics(self) -> StagesStatistics:
        """This party's statistics per stage."""
        return self._stages.statistics()


@final
class Once:
    """Blocking :class:`konductor_sdk.once.Once` (same arguments)."""

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: float = 30,
    ) -> None:
        self._once = AsyncOnce(name, namespace=namespace, client=client, ttl=ttl)

    def __repr__(self) -> str:
        return repr(self._once)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once cluster-wide (in a worker thread if it is a plain function) or
        block for the outcome of whoever runs it. A plain function cannot be interrupted:
        if the claim is lost while it runs, its value is discarded when it returns.

        Raises:
            OnceFailed: the function raised, here or in another process.
        """
        if inspect.iscoroutinefunction(fn):
            return _portal.run(self._once.run, fn)

        async def in_thread() -> Any:
            return await anyio.to_thread.run_sync(fn)

        call: Callable[[], Awaitable[Any]] = in_thread
        return _portal.run(self._once.run, call)

    def status(self) -> OnceStatus:
        """The Once as the server has it now."""
        return _portal.run(self._once.status)

    def reset(self) -> bool:
        """Forget the outcome so that the next ``run`` runs the function again."""
        return _portal.run(self._once.reset)

    def delete(self) -> bool:
        """Delete the Once object."""
        return _portal.run(self._once.delete)

    def statistics(self) -> OnceStatistics:
        """Counters of this handle."""
        return self._once.statistics()


@final
class WaitGroup:
    """Blocking :class:`konductor_sdk.waitgroup.WaitGroup` (same arguments)."""

    def __init__(
        self, name: str, *, namespace: str | None = None, client: Client | None = None
    ) -> None:
        self._wg = AsyncWaitGroup(name, namespace=namespace, client=client)

    def __repr__(self) -> str:
        return repr(self._wg)

    def add(self, delta: int = 1) -> int:
        """Add ``delta`` to the counter; returns the new value."""
        return _portal.run(self._wg.add, delta)

    def done(self) -> int:
        """``add(-1)``."""
        return _portal.run(self._wg.done)

    def wait(self) -> None:
        """Block until the counter is zero."""
        _portal.run(self._wg.wait)

    def status(self) -> WaitGroupStatus:
        """The WaitGroup as the server has it now."""
        return _portal.run(self._wg.status)

    def delete(self) -> bool:
        """Delete the WaitGroup object."""
        return _portal.run(self._wg.delete)

    def statistics(self) -> WaitGroupStatistics:
        """Counters of this handle."""
        return self._wg.statistics()

"""Blocking twins of :mod:`konductor_sdk.waitgroup` (generated, do not edit).

WaitGroup: Go's ``sync.WaitGroup`` across the cluster.

::

    wg = WaitGroup("shards")
    wg.add(3)                # the coordinator, before starting the workers
    ...
    wg.done()                # each worker, when its part is finished
    wg.wait()                # anyone: returns once the counter is zero

``add``/``done`` are CAS writes of ``status.counter``, a process's simultaneous changes
combined into one write (it can never go negative: that is a
:class:`~konductor_sdk.ConfigurationError` and nothing is written); ``wait`` watches. The
counter is bare, as in Go: a worker that dies before ``done()`` leaves it up, so bound your
waits with ``anyio.fail_after`` (or track workers with a Barrier, whose arrivals end with
their process's session). The counter is unowned: any user allowed to write waitgroups may
add and done (docs/security.md).

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from typing import final

from konductor_sdk import waitgroup as _waitgroup
from konductor_sdk.waitgroup import WaitGroupStatistics as WaitGroupStatistics
from konductor_sdk.waitgroup import WaitGroupStatus as WaitGroupStatus

from . import _portal, _twin
from .client import Client

__all__ = [
    "WaitGroup",
    "WaitGroupStatistics",
    "WaitGroupStatus",
]


@final
class WaitGroup(_twin.Twin[_waitgroup.WaitGroup]):
    """A cluster-wide counter to wait on.

    Args:
        name: the WaitGroup object's name.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.

    Raises:
        ConfigurationError: a bad name.
    """

    def __init__(
        self, name: str, *, namespace: str | None = None, client: Client | None = None
    ) -> None:
        self._bind(
            _portal.call(
                _waitgroup.WaitGroup, name, namespace=namespace, client=_twin.unwrap(client)
            )
        )

    @property
    def name(self) -> str:
        return self._async.name

    KIND = _waitgroup.WaitGroup.KIND

    def statistics(self) -> WaitGroupStatistics:
        """Counters of this instance (no I/O)."""
        return _portal.call(self._async.statistics)

    def add(self, delta: int = 1) -> int:
        """Add ``delta`` (may be negative) to the counter; creates the object if needed.

        Returns:
            The counter after the change.

        Raises:
            ConfigurationError: ``delta`` is not an integer, or the counter would become
                negative; nothing is written.
        """
        return _portal.run(self._async.add, delta)

    def done(self) -> int:
        """``add(-1)``.

        Raises:
            ConfigurationError: the counter is already zero.
        """
        return _portal.run(self._async.done)

    def wait(self) -> None:
        """Return once the counter is zero (or has been zero since this call started)."""
        _portal.run(self._async.wait)

    def status(self) -> WaitGroupStatus:
        """The WaitGroup as the server (or the watch cache) has it now."""
        return _portal.run(self._async.status)

    def delete(self) -> bool:
        """Delete the object; ``False`` if it did not exist."""
        return _portal.run(self._async.delete)

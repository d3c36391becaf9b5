"""Blocking twins of :mod:`konductor_sdk.once` (generated, do not edit).

Once: run a function once per name across the cluster; everyone gets its outcome.

::

    once = Once("init-db")
    schema_version = once.run(migrate)         # one caller runs migrate(); all get its value

The first caller to claim the Once (a CAS write of one runner entry naming its session)
runs the function; the others watch. The outcome (the JSON value, or the error) is recorded
once and returned to every caller, now and later. If the runner dies, its session ends: the
operator removes the entry and another caller runs the function again (a caller of the
same user does not need the operator: it judges the runner's session on its own clock). A
runner whose session is lost cancels the function before anyone may take over. So the
*recorded outcome* is exactly one; the function itself may start again after a crash (make
it idempotent, or fence it with :attr:`OnceStatus.attempts`).

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

from konductor_sdk import once as _once
from konductor_sdk.once import OnceStatistics as OnceStatistics
from konductor_sdk.once import OnceStatus as OnceStatus

from . import _portal, _twin
from .client import Client

__all__ = [
    "Once",
    "OnceStatistics",
    "OnceStatus",
]


@final
class Once(_twin.Twin[_once.Once]):
    """Run a function exactly once per name, cluster-wide.

    Args:
        name: the Once object's name.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: seconds the runner's session lives without renewal (how long a crashed runner
            delays the others).

    Raises:
        ConfigurationError: an argument is out of range.
    """

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: float = 30,
    ) -> None:
        self._bind(
            _portal.call(
                _once.Once, name, namespace=namespace, client=_twin.unwrap(client), ttl=ttl
            )
        )

    @property
    def name(self) -> str:
        return self._async.name

    KIND = _once.Once.KIND

    def statistics(self) -> OnceStatistics:
        """Counters of this instance (no I/O)."""
        return _portal.call(self._async.statistics)

    def status(self) -> OnceStatus:
        """The Once as the server (or the watch cache) has it now."""
        return _portal.run(self._async.status)

    def reset(self) -> bool:
        """Forget the outcome so that the next :meth:`run` runs the function again (a
        runner still running loses its claim). ``False`` if there was nothing to forget.

        Only the Once's creator (or a user allowed ``override``) may forget a recorded
        outcome or remove another user's runner.
        """
        return _portal.run(self._async.reset)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` if nobody has (or is running it), else wait for its outcome.

        Args:
            fn: an async function without arguments; its value must be JSON-serialisable
                and at most 64 KiB as JSON.

        Returns:
            The recorded value (as decoded from JSON: tuples come back as lists).

        Raises:
            OnceFailed: the function raised (in whichever caller ran it), or its value
                could not be recorded; the runner's own exception is the ``__cause__``.
        """
        return _portal.run(self._async.run, _twin.awaitable(fn))

    def delete(self) -> bool:
        """Delete the object; ``False`` if it did not exist."""
        return _portal.run(self._async.delete)

"""Blocking twin of :class:`konductor_sdk.gate.Gate`, for scripts::

    from konductor_sdk.sync.gate import Gate
    Gate("release").wait()          # blocks until Open; raises GateFailed

Every method runs the async one in the portal's event loop (see ``_portal``), so the two
cannot drift apart. Interrupting a blocking ``wait`` (Ctrl-C) cancels it in the loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, final

from konductor_sdk._kernel.client import Client

from ..gate import Condition, GateStatistics, GateStatus
from ..gate import Gate as AsyncGate
from . import _portal

__all__ = ["Condition", "Gate", "GateStatistics", "GateStatus"]


@final
class Gate:
    """A blocking handle on the Gate ``name``; see :class:`konductor_sdk.gate.Gate`.

    Args:
        name: the Gate object's name.
        namespace: default: the client's namespace.
        client: a :class:`~konductor_sdk.Client` created in the portal's loop, or ``None``
            for that loop's default client.

    Raises:
        ConfigurationError: ``name`` is not a valid object name.
    """

    def __init__(
        self, name: str, *, namespace: str | None = None, client: Client | None = None
    ) -> None:
        self._gate = _portal.make(AsyncGate, name, namespace=namespace, client=client)

    def __repr__(self) -> str:
        return repr(self._gate)

    @property
    def name(self) -> str:
        return self._gate.name

    def statistics(self) -> GateStatistics:
        return self._gate.statistics()

    def create(
        self,
        conditions: Sequence[Condition | Mapping[str, Any]],
        *,
        match: str = "all",
        timeout: int | None = None,
        latch: bool = False,
        exist_ok: bool = False,
    ) -> GateStatus:
        """See :meth:`konductor_sdk.gate.Gate.create`."""
        return _portal.run(
            self._gate.create,
            conditions,
            match=match,
            timeout=timeout,
            latch=latch,
            exist_ok=exist_ok,
        )

    def status(self) -> GateStatus:
        """See :meth:`konductor_sdk.gate.Gate.status`."""
        return _portal.run(self._gate.status)

    def wait(self) -> GateStatus:
        """See :meth:`konductor_sdk.gate.Gate.wait`."""
        return _portal.run(self._gate.wait)

    def mark(self, condition: str, *, met: bool = True, message: str = "") -> GateStatus:
        """See :meth:`konductor_sdk.gate.Gate.mark`."""
        return _portal.run(self._gate.mark, condition, met=met, message=message)

    def delete(self) -> None:
        """See :meth:`konductor_sdk.gate.Gate.delete`."""
        _portal.run(self._gate.delete)

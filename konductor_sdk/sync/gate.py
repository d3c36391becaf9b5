"""Blocking twins of :mod:`konductor_sdk.gate` (generated, do not edit).

Gate: wait until a set of conditions across the cluster holds (AND/OR, external hooks).

::

    gate = Gate("release")
    gate.create([
        Condition.job("validated", "validate"),
        Condition.any("stage", Condition.barrier("stage-1", "stage-1"),
                               Condition.external("approved")),
    ])
    gate.wait()                              # returns when Open; raises GateFailed
    Gate("release").mark("approved", message="LGTM")         # someone else, elsewhere

The operator evaluates the referenced objects and writes one status entry per condition;
waiting is the shared watch of Gates (no polling): a waiter wakes on the watch event that
carries the write opening the gate. ``mark`` is a compare-and-swap on the status, so an
external-only gate opens even with the operator down. ``wait`` judges the gate with the
same pure function the operator uses, over the spec as it is now, so a status computed for
an older spec never lets a waiter through. Layout and guarantees: ``docs/gate.md``.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, final

from konductor_sdk import gate as _gate
from konductor_sdk.gate import Condition as Condition
from konductor_sdk.gate import ConditionState as ConditionState
from konductor_sdk.gate import GateStatistics as GateStatistics
from konductor_sdk.gate import GateStatus as GateStatus

from . import _portal, _twin
from .client import Client

__all__ = [
    "Condition",
    "ConditionState",
    "Gate",
    "GateStatistics",
    "GateStatus",
]


@final
class Gate(_twin.Twin[_gate.Gate]):
    """A handle on the Gate ``name``; cheap, holds no server-side state.

    Args:
        name: the Gate object's name.
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.

    Raises:
        ConfigurationError: ``name`` is not a valid object name.
    """

    def __init__(
        self, name: str, *, namespace: str | None = None, client: Client | None = None
    ) -> None:
        self._bind(_portal.call(_gate.Gate, name, namespace=namespace, client=_twin.unwrap(client)))

    @property
    def name(self) -> str:
        return self._async.name

    def statistics(self) -> GateStatistics:
        return _portal.call(self._async.statistics)

    def create(
        self,
        conditions: Sequence[Condition | Mapping[str, Any]],
        *,
        match: str = "all",
        timeout: int | None = None,
        latch: bool = False,
        exist_ok: bool = False,
    ) -> GateStatus:
        """Create the gate; the authenticated user is recorded as ``spec.creator``.

        Args:
            conditions: :class:`Condition` objects (or their spec dicts).
            match: ``all`` or ``any`` over the top-level conditions.
            timeout: whole seconds the gate may wait before it fails (``None``: forever).
            latch: once Open, stay Open (else the gate follows its conditions).
            exist_ok: return an existing gate of that name (its spec unchanged) instead
                of raising.

        Raises:
            ConfigurationError: a condition, ``match``, ``timeout`` or ``latch`` is out of
                range (the message names the field); nothing is written.
            AlreadyExistsError: the gate exists and ``exist_ok`` is false.
        """
        return _portal.run(
            self._async.create,
            conditions,
            match=match,
            timeout=timeout,
            latch=latch,
            exist_ok=exist_ok,
        )

    def status(self) -> GateStatus:
        """The gate as it is now (a fresh read).

        Raises:
            NotFoundError: no such gate.
        """
        return _portal.run(self._async.status)

    def wait(self) -> GateStatus:
        """Wait until the gate is Open; returns its status at that moment.

        Driven by the shared watch: no polling, and the waiter wakes on the watch event of
        the write that opens the gate. A gate without ``latch`` may close again after this
        returns. Cancel with ``anyio.fail_after``/``move_on_after``.

        Raises:
            GateFailed: the gate failed (timeout, a condition that can never hold, an
                invalid spec); the message says why and names the unmet conditions.
            NotFoundError: the gate does not exist, or was deleted while waiting.
        """
        return _portal.run(self._async.wait)

    def mark(self, condition: str, *, met: bool = True, message: str = "") -> GateStatus:
        """Set the external condition ``condition`` of this gate.

        Records who marked it (``markedBy``: this client's holder id and, if the server
        tells, its authenticated user name — self-reported, see ``docs/gate.md``).

        Raises:
            ConfigurationError: ``condition`` is not an external condition of the gate, or
                ``message`` is longer than 1024 characters; nothing is written.
            NotFoundError: no such gate.
        """
        return _portal.run(self._async.mark, condition, met=met, message=message)

    def delete(self) -> None:
        """Delete the gate (waiters get :class:`NotFoundError`).

        Raises:
            NotFoundError: no such gate.
        """
        _portal.run(self._async.delete)

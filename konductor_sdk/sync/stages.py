"""Blocking twins of :mod:`konductor_sdk.stages` (generated, do not edit).

Stages: a named sequence of barriers, e.g. ``load -> train -> export``.

::

    stages = Stages("pipeline", ["load", "train", "export"], parties=8)
    rank = stages.wait("load")
    ...
    stages.wait("train")

Each stage is its own Barrier object ``<name>-<stage>`` labelled
``sync.konductor.io/pipeline=<name>`` and ``sync.konductor.io/stage-index=<i>``, so
``kubectl get barriers -l sync.konductor.io/pipeline=<name>`` shows every stage's phase and
arrivals. One party key is shared by all stages, so a missing party has the same name in
each of them.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

from konductor_sdk import BarrierStatus
from konductor_sdk import stages as _stages
from konductor_sdk.stages import StagesStatistics as StagesStatistics

from . import _portal, _twin
from .barrier import Barrier
from .client import Client

__all__ = [
    "Stages",
    "StagesStatistics",
]


@final
class Stages(_twin.Twin[_stages.Stages]):
    """One barrier per named stage, all for the same parties.

    Args:
        name: the pipeline's name (prefix of every stage's object name, label value).
        stages: stage names in order; unique, each a valid name part.
        parties: parties expected at each stage (``None``: join existing barriers).
        namespace, client, quorum, last_call, timeout, ttl: as for :class:`Barrier`,
            applied to every stage.
        party: this party's name at every stage (default: one unique name per instance).

    Raises:
        ConfigurationError: a bad name, stage list or barrier argument.
    """

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
        self._bind(
            _portal.call(
                _stages.Stages,
                name,
                stages,
                parties=parties,
                namespace=namespace,
                client=_twin.unwrap(client),
                quorum=quorum,
                last_call=last_call,
                timeout=timeout,
                ttl=ttl,
                party=party,
            )
        )

    @property
    def name(self) -> str:
        return self._async.name

    @property
    def stages(self) -> tuple[str, ...]:
        return self._async.stages

    def barrier(self, stage: str) -> Barrier:
        """The :class:`Barrier` of ``stage``.

        Raises:
            ConfigurationError: no such stage.
        """
        return Barrier._wrap(_portal.call(self._async.barrier, stage))

    @property
    def party(self) -> str:
        """This party's name, the same at every stage."""
        return self._async.party

    def wait(self, stage: str) -> int:
        """Arrive at ``stage`` and wait until it opens; returns this party's index there.

        Raises:
            ConfigurationError: no such stage.
            BarrierFailed: as :meth:`Barrier.wait`.
        """
        return _portal.run(self._async.wait, stage)

    def create(self, *, exist_ok: bool = False) -> tuple[BarrierStatus, ...]:
        """Create every stage's Barrier object (see :meth:`Barrier.create`)."""
        return _portal.run(self._async.create, exist_ok=exist_ok)

    def status(self) -> tuple[BarrierStatus, ...]:
        """Every stage's status, in stage order."""
        return _portal.run(self._async.status)

    def delete(self) -> int:
        """Delete every stage's object; returns how many existed."""
        return _portal.run(self._async.delete)

    def statistics(self) -> StagesStatistics:
        """This party's statistics per stage (no I/O)."""
        return _portal.call(self._async.statistics)

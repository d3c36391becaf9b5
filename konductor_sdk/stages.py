"""Stages: a named sequence of barriers, e.g. ``load -> train -> export``.

::

    stages = Stages("pipeline", ["load", "train", "export"], parties=8)
    rank = await stages.wait("load")
    ...
    await stages.wait("train")

Each stage is its own Barrier object ``<name>-<stage>`` labelled
``sync.konductor.io/pipeline=<name>`` and ``sync.konductor.io/stage-index=<i>``, so
``kubectl get barriers -l sync.konductor.io/pipeline=<name>`` shows every stage's phase and
arrivals. One party key is shared by all stages, so a missing party has the same name in
each of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import attrs

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.identity import detect
from konductor_sdk._kernel.names import check_label_value, check_object_name

from .barrier import Barrier, BarrierStatistics, BarrierStatus

PIPELINE_LABEL = "sync.konductor.io/pipeline"
STAGE_LABEL = "sync.konductor.io/stage"
STAGE_INDEX_LABEL = "sync.konductor.io/stage-index"


@final
@attrs.frozen
class StagesStatistics:
    """Per-stage statistics of this party, in stage order."""

    stages: tuple[tuple[str, BarrierStatistics], ...]


@final
class Stages:
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
        self.name = check_object_name(name)
        check_label_value(name, field="name")
        if isinstance(stages, str) or not stages:
            raise ConfigurationError(f"stages must be a non-empty list of names, got {stages!r}")
        if len(set(stages)) != len(stages):
            raise ConfigurationError(f"stages must be unique, got {list(stages)!r}")
        # One name for every stage, so a missing party has the same name in each of them.
        if party is None:
            party = (client.identity if client is not None else detect()).new_key()
        self._party = party
        self._barriers: dict[str, Barrier] = {}
        for index, stage in enumerate(stages):
            check_label_value(stage, field=f"stages[{index}]")
            full = f"{name}-{stage}"
            check_object_name(full, field=f"stage object name for stages[{index}]")
            labels = {PIPELINE_LABEL: name, STAGE_LABEL: stage, STAGE_INDEX_LABEL: str(index)}
            self._barriers[stage] = Barrier(
                full,
                expected=parties,
                namespace=namespace,
                client=client,
                quorum=quorum,
                last_call=last_call,
                timeout=timeout,
                ttl=ttl,
                party=party,
                labels=labels,
            )

    def __repr__(self) -> str:
        return f"<Stages {self.name} {' -> '.join(self._barriers)}>"

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self._barriers)

    def barrier(self, stage: str) -> Barrier:
        """The :class:`Barrier` of ``stage``.

        Raises:
            ConfigurationError: no such stage.
        """
        try:
            return self._barriers[stage]
        except KeyError:
            raise ConfigurationError(
                f"stage must be one of {list(self._barriers)}, got {stage!r}"
            ) from None

    @property
    def party(self) -> str:
        """This party's name, the same at every stage."""
        return self._party

    async def wait(self, stage: str) -> int:
        """Arrive at ``stage`` and wait until it opens; returns this party's index there.

        Raises:
            ConfigurationError: no such stage.
            BarrierFailed: as :meth:`Barrier.wait`.
        """
        return await self.barrier(stage).wait()

    async def create(self, *, exist_ok: bool = False) -> tuple[BarrierStatus, ...]:
        """Create every stage's Barrier object (see :meth:`Barrier.create`)."""
        return tuple([await b.create(exist_ok=exist_ok) for b in self._barriers.values()])

    async def status(self) -> tuple[BarrierStatus, ...]:
        """Every stage's status, in stage order."""
        return tuple([await b.status() for b in self._barriers.values()])

    async def delete(self) -> int:
        """Delete every stage's object; returns how many existed."""
        return sum([await b.delete() for b in self._barriers.values()])

    def statistics(self) -> StagesStatistics:
        """This party's statistics per stage (no I/O)."""
        return StagesStatistics(tuple((s, b.statistics()) for s, b in self._barriers.items()))

"""What a waiting party makes of a barrier's status: its outcome and its rank.

A party knows its generation and its arrival index (from its own arrival write). From any
later version of the object it can tell whether that generation is still waiting, opened
(and its rank there), failed, or withdrew it, also after later generations started
(``previous``, ``history``). All of it is read off counters: no party list is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from konductor_sdk._kernel.validate import stored_int
from konductor_sdk._machines import barrier as state
from konductor_sdk._machines import barrier_ranges as ranges
from konductor_sdk._machines.barrier_spec import parse_spec

PENDING: Final = "pending"
OPENED: Final = "opened"
FAILED: Final = "failed"
REMOVED: Final = "removed"
UNKNOWN: Final = "unknown"


@attrs.frozen
class Outcome:
    """How generation ``generation`` ended for the party at ``index``.

    ``state`` is one of ``pending``, ``opened`` (``rank`` set), ``failed``, ``removed``
    (its arrival was withdrawn: it left or was reaped), ``unknown`` (no longer recorded).
    """

    state: str
    generation: int
    rank: int | None = None
    reason: str = ""
    message: str = ""
    missing: tuple[str, ...] = ()
    arrived: int = 0
    phase: str = ""
    """The generation's phase when it is concluded (``Open``/``Failed``)."""


@attrs.frozen
class _Concluded:
    """A concluded generation's record, parsed once: every party of a process reads its
    outcome off the same version, so the per-party cost is a lookup in ``departed``."""

    generation: int
    phase: str
    next_index: int
    arrived: int
    departed: ranges.Ranges | None
    failed: Outcome | None
    """The one outcome of a failed generation (the same for every party)."""

    @classmethod
    def parse(cls, generation: int, record: Mapping[str, Any]) -> _Concluded:
        phase = str(record.get("phase", ""))
        next_index = stored_int(record.get("nextIndex"), -1, minimum=0)
        arrived = stored_int(record.get("arrived"), 0, minimum=0)
        raw = record.get("departed")
        departed: ranges.Ranges | None
        if raw is not None:
            departed = ranges.clean(raw, below=next_index if next_index >= 0 else None)
        elif next_index >= 0 and arrived == next_index:
            departed = []  # nobody left: ranks are indices
        else:
            departed = None  # a history record of a generation some parties left: unknown
        failed = None
        if phase != state.OPEN:
            # Failed: for everyone, also for a party withdrawn before it failed.
            failed = Outcome(
                FAILED,
                generation,
                reason=str(record.get("reason", "")),
                message=str(record.get("message", "")),
                missing=tuple(m for m in record.get("missing") or () if isinstance(m, str)),
                arrived=arrived,
                phase=phase,
            )
        return cls(generation, phase, next_index, arrived, departed, failed)

    def of(self, index: int) -> Outcome:
        generation, phase = self.generation, self.phase
        if self.next_index >= 0 and index >= self.next_index:
            return Outcome(UNKNOWN, generation, phase=phase)
        if self.failed is not None:
            return self.failed
        departed = self.departed
        if departed is None:
            return Outcome(UNKNOWN, generation, phase=phase)
        if not departed:
            return Outcome(OPENED, generation, rank=index, arrived=self.arrived, phase=phase)
        if ranges.contains(departed, index):
            return Outcome(REMOVED, generation, reason=phase, arrived=self.arrived, phase=phase)
        rank = index - ranges.count_below(departed, index)
        return Outcome(OPENED, generation, rank=rank, arrived=self.arrived, phase=phase)


def reader(s: Mapping[str, Any], generation: int) -> Callable[[int], Outcome]:
    """What the parties of ``generation`` make of the normalized status ``s`` (read,
    never modified), by arrival index: :func:`outcome_of` with the generation's record
    looked up and parsed once for all of them."""
    current = s["generation"]
    if current < generation:
        pending = Outcome(PENDING, generation)  # a view older than the parties' arrivals
        return lambda index: pending
    if current == generation:
        if s["phase"] == state.WAITING:
            next_index, departed = s["nextIndex"], s["departed"]
            pending = Outcome(PENDING, generation)

            def waiting(index: int) -> Outcome:
                if index < next_index and ranges.contains(departed, index):
                    return Outcome(REMOVED, generation, reason=state.WAITING, arrived=s["arrived"])
                return pending  # still waiting, or a view older than the party's arrival

            return waiting
        return _Concluded.parse(generation, s).of
    previous = s.get("previous") or {}
    if stored_int(previous.get("generation"), 0, minimum=0) == generation:
        return _Concluded.parse(generation, previous).of
    for record in s["history"]:
        if record.get("generation") == generation:
            return _Concluded.parse(generation, record).of
    unknown = Outcome(UNKNOWN, generation)
    return lambda index: unknown


def outcome_of(s: Mapping[str, Any], *, generation: int, index: int) -> Outcome:
    """What the party at ``index`` of ``generation`` makes of the normalized status ``s``
    (read, never modified)."""
    return reader(s, generation)(index)


def outcome(status: Mapping[str, Any], *, generation: int, index: int) -> Outcome:
    """:func:`outcome_of` on a status as stored."""
    s = state.normalize({"expected": state.MAX_EXPECTED}, status)
    return outcome_of(s, generation=generation, index=index)


@attrs.frozen
class View:
    """Everything the parties of one process read off one version of the object, none of
    it specific to a party: computed once per resourceVersion."""

    status: Mapping[str, Any]
    """The normalized status. Shared: never modified."""
    advance_due: bool
    """:func:`~barrier.advance` would write (whatever ``now`` it is given)."""
    timeout: float | None
    """:func:`~barrier.timeout_seconds`."""
    last_call: tuple[int, int] | None
    """:func:`~barrier.last_call_episode`."""
    last_call_seconds: float


def view(spec: Mapping[str, Any], status: Mapping[str, Any]) -> View:
    """The :class:`View` of ``(spec, status)``."""
    sp = parse_spec(spec)
    s = state.normalize(spec, status)
    advanced = copy.deepcopy(s)
    state._advance_in_place(sp, advanced, "")
    return View(
        status=s,
        advance_due=advanced != s,
        timeout=state._timeout_seconds(sp, s),
        last_call=state._last_call_episode(sp, s),
        last_call_seconds=sp.last_call_seconds,
    )

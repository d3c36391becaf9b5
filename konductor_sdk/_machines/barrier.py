"""Pure state of a Barrier: arrivals, generations, quorum, last call, failure.

Every function here maps ``(spec, status)`` (plus the caller's decision and a wall-clock
string for humans) to a new status, with no I/O and no clock of its own, so the SDK (inside
its CAS loops), the operator (after reaping, on timeout) and hypothesis all run the same
code. Layout (see ``docs/barrier.md``)::

    generation: 3                 # the current generation, from 1
    phase: Waiting|Open|Failed    # of the current generation
    arrivals: {<party>: entry + index, generation, arrivedAt}
    arrived, nextIndex            # count; provisional index of the next arrival
    quorumReachedAt, quorumEpisode   # the last-call window (spec.quorum < spec.expected)
    startedAt, openedAt, failedAt, reason, message, missing
    parties: [<party>...]         # once concluded: who it opened (failed) with, by index
    roster: [<party>...]          # parties known to belong: the previous generation's and
                                  # every party that arrived in this one (names `missing`)
    previous: {generation, phase, parties, ...}   # the generation before this one
    history: [{generation, phase, at, arrived, reason, message}]   # the last 16

A generation opens exactly once: by the CAS write that brings ``arrived`` to ``expected``
(or to ``quorum`` with no last call), or by a waiter whose last-call stopwatch ran out; it
fails exactly once, by ``reset`` or a timeout. It then stays concluded (so slow waiters
still see it) until the next ``arrive`` starts generation + 1; ``previous`` and
``history`` answer waiters that missed the concluded state entirely.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping
from typing import Any, Final

import attrs

from konductor_sdk._kernel.clock import SYSTEM_CLOCK, rfc3339
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._machines.barrier_spec import MAX_EXPECTED as MAX_EXPECTED
from konductor_sdk._machines.barrier_spec import BarrierSpec as BarrierSpec
from konductor_sdk._machines.barrier_spec import _int
from konductor_sdk._machines.barrier_spec import parse_spec as parse_spec
from konductor_sdk._machines.barrier_spec import validate_spec as validate_spec
from konductor_sdk._machines.rules import KindRules, register

Spec = Mapping[str, Any]
Status = dict[str, Any]

WAITING: Final = "Waiting"
OPEN: Final = "Open"
FAILED: Final = "Failed"
PHASES: Final = (WAITING, OPEN, FAILED)
RESET: Final = "Reset"
TIMEOUT: Final = "Timeout"

HISTORY_LIMIT: Final = 16
ROSTER_LIMIT: Final = 2 * MAX_EXPECTED

# Outcomes of one party's wait, see outcome().
PENDING: Final = "pending"
OPENED: Final = "opened"
FAILED_OUTCOME: Final = "failed"
REMOVED: Final = "removed"
UNKNOWN: Final = "unknown"


# --- normalization -------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    seen: dict[str, None] = {}
    for item in value:
        if isinstance(item, str):
            seen.setdefault(item, None)
    return list(seen)


def _normalize_in_place(sp: BarrierSpec, s: Status) -> None:
    s["generation"] = _int(s.get("generation"), 1, minimum=1)
    if s.get("phase") not in PHASES:
        s["phase"] = WAITING
    raw = s.get("arrivals")
    arrivals = (
        {str(k): dict(v) for k, v in raw.items() if isinstance(v, Mapping)}
        if isinstance(raw, Mapping)
        else {}
    )
    s["arrivals"] = arrivals
    top = max((_int(e.get("index"), -1) for e in arrivals.values()), default=-1)
    s["nextIndex"] = max(_int(s.get("nextIndex"), 0), top + 1)
    s["quorumEpisode"] = _int(s.get("quorumEpisode"), 0)
    s["roster"] = _strings(s.get("roster"))[-ROSTER_LIMIT:]
    history = s.get("history")
    s["history"] = (
        [dict(h) for h in history if isinstance(h, Mapping)][-HISTORY_LIMIT:]
        if isinstance(history, list)
        else []
    )
    if not isinstance(s.get("previous"), Mapping):
        s.pop("previous", None)
    if s["phase"] == WAITING:
        for field in ("parties", "openedAt", "failedAt", "reason", "message", "missing"):
            s.pop(field, None)
        s["arrived"] = len(arrivals)
        if len(arrivals) < sp.effective_quorum:
            s.pop("quorumReachedAt", None)  # a dip below quorum ends the last-call window
    else:
        s["parties"] = _strings(s.get("parties"))
        s["arrived"] = len(s["parties"])


def normalize(spec: Spec, status: Mapping[str, Any]) -> Status:
    """The status with every default and derived field recomputed (pure, idempotent)."""
    s: Status = copy.deepcopy(dict(status))
    _normalize_in_place(parse_spec(spec), s)
    return s


# --- transitions -------------------------------------------------------------------------


def _by_index(arrivals: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(arrivals, key=lambda k: (_int(arrivals[k].get("index"), 1 << 30), k))


def _record(s: Status, now: str, **fields: Any) -> None:
    item = {"generation": s["generation"], "phase": s["phase"], "at": now}
    item["arrived"] = s["arrived"]
    item.update({k: v for k, v in fields.items() if v})
    s["history"] = [*s["history"], item][-HISTORY_LIMIT:]


def _open(s: Status, now: str) -> None:
    arrivals = s["arrivals"]
    parties = _by_index(arrivals)
    # Indices are compacted to 0..n-1 in arrival order, so they can serve as ranks even
    # when parties left (or were reaped) before the barrier opened.
    for index, key in enumerate(parties):
        arrivals[key]["index"] = index
    s["phase"] = OPEN
    s["openedAt"] = now
    s["parties"] = parties
    s["arrived"] = len(parties)
    _record(s, now)


def missing_parties(sp: BarrierSpec, s: Mapping[str, Any]) -> list[str]:
    """Parties known by name that have not arrived, then ``"<n more>"`` for the rest."""
    arrivals = s.get("arrivals") or {}
    named = [p for p in _strings(s.get("roster")) if p not in arrivals]
    deficit = sp.expected - len(arrivals) - len(named)
    return [*named, f"<{deficit} more>"] if deficit > 0 else named


def _fail(sp: BarrierSpec, s: Status, *, reason: str, message: str, now: str) -> None:
    s["missing"] = missing_parties(sp, s)
    s["parties"] = _by_index(s["arrivals"])
    s["arrived"] = len(s["parties"])
    s["phase"] = FAILED
    s["failedAt"] = now
    s["reason"] = reason
    s["message"] = message
    _record(s, now, reason=reason, message=message)


def _start_next(s: Status, now: str) -> None:
    previous: dict[str, Any] = {
        "generation": s["generation"],
        "phase": s["phase"],
        "parties": s.get("parties", []),
    }
    roster = list(previous["parties"])
    if s["phase"] == FAILED:
        previous.update({k: s[k] for k in ("reason", "message", "missing") if k in s})
        roster += [p for p in s["roster"] if p not in roster]
    kept: Status = {k: s[k] for k in ("history", "observedGeneration") if k in s}
    s.clear()
    s.update(kept)
    s.update(
        generation=previous["generation"] + 1,
        phase=WAITING,
        arrivals={},
        arrived=0,
        nextIndex=0,
        quorumEpisode=0,
        roster=roster[-ROSTER_LIMIT:],
        previous=previous,
    )


def _advance_in_place(sp: BarrierSpec, s: Status, now: str) -> None:
    if s["phase"] != WAITING:
        return
    arrived, quorum = s["arrived"], sp.effective_quorum
    if arrived >= sp.expected:
        _open(s, now)
        return
    if quorum < sp.expected and arrived >= quorum:
        if "quorumReachedAt" not in s:
            s["quorumReachedAt"] = now
            s["quorumEpisode"] += 1
        if sp.last_call_seconds <= 0:
            _open(s, now)


def advance(spec: Spec, status: Mapping[str, Any], *, now: str) -> Status | None:
    """Apply what is due without any clock: open at ``expected`` (e.g. after ``expected``
    was lowered), start the last-call window at quorum. ``None`` if nothing changes."""
    sp = parse_spec(spec)
    s = normalize(spec, status)
    _advance_in_place(sp, s, now)
    return None if s == status else s


@attrs.frozen
class ArriveResult:
    """What :func:`arrive` decided: the new status (``None``: already arrived, no write),
    the generation joined and this party's entry as stored."""

    status: Status | None
    generation: int
    entry: Mapping[str, Any]


def arrive(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    key: str,
    entry: Mapping[str, Any],
    after_generation: int,
    now: str,
) -> ArriveResult:
    """Record party ``key`` in the current generation, or start the next one if the
    current one is concluded. ``after_generation`` is the last generation this party
    finished; an arrival of ``key`` in a later generation is this party's and is kept
    (idempotent retries)."""
    sp = parse_spec(spec)
    s = normalize(spec, status)
    existing = s["arrivals"].get(key)
    if existing is not None and s["generation"] > after_generation:
        return ArriveResult(None, s["generation"], existing)
    if s["phase"] != WAITING:
        _start_next(s, now)
    arrivals = s["arrivals"]
    if not arrivals:
        s["startedAt"] = now
    arrivals[key] = {
        **entry,
        "index": s["nextIndex"],
        "generation": s["generation"],
        "arrivedAt": now,
    }
    s["nextIndex"] += 1
    if key not in s["roster"]:
        s["roster"] = [*s["roster"], key][-ROSTER_LIMIT:]
    _normalize_in_place(sp, s)
    _advance_in_place(sp, s, now)
    return ArriveResult(s, s["generation"], s["arrivals"][key])


def leave(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    key: str,
    generation: int | None = None,
    acquired_at: str | None = None,
) -> Status | None:
    """Remove the arrival of ``key`` while its generation waits (and, if given, only that
    generation's / that ``acquiredAt``'s); ``None`` if there is nothing to remove."""
    s = normalize(spec, status)
    entry = s["arrivals"].get(key)
    if s["phase"] != WAITING or entry is None:
        return None
    if generation is not None and s["generation"] != generation:
        return None
    if acquired_at is not None and entry.get("acquiredAt") != acquired_at:
        return None
    del s["arrivals"][key]
    _normalize_in_place(parse_spec(spec), s)
    return s


def fail(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    generation: int,
    reason: str,
    message: str,
    now: str,
) -> Status | None:
    """Fail ``generation`` if it is still the waiting one; ``None`` otherwise."""
    s = normalize(spec, status)
    if s["generation"] != generation or s["phase"] != WAITING:
        return None
    _fail(parse_spec(spec), s, reason=reason, message=message, now=now)
    return s


def reset(spec: Spec, status: Mapping[str, Any], *, now: str, message: str) -> Status | None:
    """Fail the waiting generation (``reason: Reset``) if anyone arrived in it."""
    s = normalize(spec, status)
    if s["phase"] != WAITING or not s["arrivals"]:
        return None
    _fail(parse_spec(spec), s, reason=RESET, message=message, now=now)
    return s


def last_call_episode(spec: Spec, status: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(generation, quorumEpisode)`` while a last-call window is running, else ``None``.
    Each waiter times the window on its own monotonic clock from when it first saw it."""
    return _last_call_episode(parse_spec(spec), normalize(spec, status))


def _last_call_episode(sp: BarrierSpec, s: Mapping[str, Any]) -> tuple[int, int] | None:
    quorum = sp.effective_quorum
    if (
        s["phase"] != WAITING
        or quorum >= sp.expected
        or sp.last_call_seconds <= 0
        or "quorumReachedAt" not in s
        or s["arrived"] < quorum
    ):
        return None
    return (s["generation"], s["quorumEpisode"])


def open_last_call(
    spec: Spec, status: Mapping[str, Any], *, generation: int, episode: int, now: str
) -> Status | None:
    """Open the barrier when the last-call window ``(generation, episode)`` ran out, if that
    window is still the running one; ``None`` otherwise."""
    if last_call_episode(spec, status) != (generation, episode):
        return None
    s = normalize(spec, status)
    _open(s, now)
    return s


def timeout_seconds(spec: Spec, status: Mapping[str, Any]) -> float | None:
    """``spec.timeoutSeconds`` while the generation waits with someone in it, else ``None``."""
    return _timeout_seconds(parse_spec(spec), normalize(spec, status))


def _timeout_seconds(sp: BarrierSpec, s: Mapping[str, Any]) -> float | None:
    if sp.timeout is None or s["phase"] != WAITING or not s["arrivals"]:
        return None
    return sp.timeout


# --- what a waiter makes of a status ----------------------------------------------------


@attrs.frozen
class Outcome:
    """How generation ``generation`` ended for one party (``state`` is one of
    ``pending``, ``opened``, ``failed``, ``removed``, ``unknown``)."""

    state: str
    generation: int
    index: int | None = None
    reason: str = ""
    message: str = ""
    arrived: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def _concluded(generation: int, key: str, record: Mapping[str, Any]) -> Outcome:
    parties = tuple(_strings(record.get("parties")))
    if record.get("phase") == OPEN:
        if key in parties:
            return Outcome(OPENED, generation, index=parties.index(key), arrived=parties)
        return Outcome(REMOVED, generation, reason=OPEN, arrived=parties)
    return Outcome(
        FAILED_OUTCOME,
        generation,
        reason=str(record.get("reason", "")),
        message=str(record.get("message", "")),
        arrived=parties,
        missing=tuple(_strings(record.get("missing"))),
    )


def outcome(status: Mapping[str, Any], *, key: str, generation: int) -> Outcome:
    """What party ``key``, which arrived in ``generation``, makes of ``status``."""
    return outcome_of(normalize({"expected": MAX_EXPECTED}, status), key=key, generation=generation)


def outcome_of(s: Mapping[str, Any], *, key: str, generation: int) -> Outcome:
    """:func:`outcome` of an already normalized status (read, never modified)."""
    current = s["generation"]
    if current < generation:
        return Outcome(PENDING, generation)  # a cache that has not caught up with us yet
    if current == generation:
        if s["phase"] == WAITING:
            return Outcome(PENDING if key in s["arrivals"] else REMOVED, generation)
        return _concluded(generation, key, s)
    previous = s.get("previous") or {}
    if _int(previous.get("generation"), 0) == generation:
        return _concluded(generation, key, previous)
    for record in s["history"]:
        if record.get("generation") == generation and record.get("phase") == FAILED:
            return _concluded(generation, key, record)
    return Outcome(UNKNOWN, generation)


@attrs.frozen
class View:
    """Everything a waiting party reads off one version of the object, none of it specific
    to the party: computed once per resourceVersion and shared by all the parties of a
    process (each recomputing it costs a deep copy of every arrival, per party, per event,
    which made releasing 256 parties take seconds)."""

    status: Mapping[str, Any]
    """The normalized status. Shared: never modified."""
    advance_due: bool
    """:func:`advance` would write (whatever ``now`` it is given)."""
    timeout: float | None
    """:func:`timeout_seconds`."""
    last_call: tuple[int, int] | None
    """:func:`last_call_episode`."""
    last_call_seconds: float


def view(spec: Spec, status: Mapping[str, Any]) -> View:
    """The :class:`View` of ``(spec, status)``: the same answers as :func:`outcome`,
    :func:`advance`, :func:`timeout_seconds` and :func:`last_call_episode`."""
    sp = parse_spec(spec)
    s = normalize(spec, status)
    advanced = copy.deepcopy(s)
    _advance_in_place(sp, advanced, "")
    return View(
        status=s,
        advance_due=advanced != status,
        timeout=_timeout_seconds(sp, s),
        last_call=_last_call_episode(sp, s),
        last_call_seconds=sp.last_call_seconds,
    )


# --- operator hooks ----------------------------------------------------------------------


def _timer(obj: KObject) -> tuple[Hashable, float] | None:
    seconds = timeout_seconds(obj.spec, obj.status)
    if seconds is None:
        return None
    generation = normalize(obj.spec, obj.status)["generation"]
    return ((obj.uid, generation), seconds)


def on_timeout(obj: KObject) -> Status | None:
    """The operator's timeout: fail the waiting generation (``reason: Timeout``)."""
    seconds = timeout_seconds(obj.spec, obj.status)
    if seconds is None:
        return None
    return fail(
        obj.spec,
        obj.status,
        generation=normalize(obj.spec, obj.status)["generation"],
        reason=TIMEOUT,
        message=f"not opened within spec.timeoutSeconds={seconds:g} (judged by the operator)",
        now=rfc3339(SYSTEM_CLOCK.now()),
    )


def _gauges(obj: KObject) -> Mapping[str, float]:
    s = normalize(obj.spec, obj.status)
    return {
        "arrived": float(s["arrived"]),
        "expected": float(parse_spec(obj.spec).expected),
        "generation": float(s["generation"]),
        "open": 1.0 if s["phase"] == OPEN else 0.0,
    }


def _describe(obj: KObject) -> str:
    s = normalize(obj.spec, obj.status)
    sp = parse_spec(obj.spec)
    return f"generation {s['generation']} {s['phase']}: {s['arrived']}/{sp.expected} arrived"


RULES: Final = register(
    KindRules(
        kind=BARRIER,
        entry_maps=("arrivals",),
        normalize=normalize,
        timer=_timer,
        on_timeout=on_timeout,
        gauges=_gauges,
        describe=_describe,
    )
)

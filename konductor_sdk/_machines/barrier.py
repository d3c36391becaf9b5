"""Pure state of a Barrier: counters per generation, quorum, last call, failure.

Every function maps ``(spec, status)`` (plus the caller's decision and a wall-clock string
for humans) to a new status, with no I/O and no clock of its own, so the SDK (inside its
CAS loops), the operator (reaping, timeouts) and hypothesis all run the same code. The
status holds counters, never parties (see ``docs/barrier.md``)::

    generation: 3                 # the current generation, from 1
    phase: Waiting|Open|Failed    # of the current generation
    arrived: 4093                 # parties counted in it = nextIndex - len(departed)
    arrivedBy: {<user>: 4093}     # the same count per user (O(users), not O(parties))
    nextIndex: 4096               # the next arrival index; a batch of k takes [i, i+k)
    departed: [[17, 2], [900, 1]] # index ranges that left (or were reaped) while it waited
    recent: [{batch, generation, firstIndex, count, session, user}]   # the last 32 batches
    startedAt, quorumReachedAt, quorumEpisode, openedAt, failedAt, reason, message, missing
    previous: {generation, phase, arrived, nextIndex, departed, ...}  # the one before
    history: [{generation, phase, at, arrived, nextIndex, reason, message}]   # the last 16

Who arrived is in the arrival Claims (one per process batch, carrying the party names and
the session); the object stays a few hundred bytes whatever the number of parties.

A generation opens exactly once: by the CAS write that brings ``arrived`` to ``expected``
(or to ``quorum`` with no last call), or by a waiter whose last-call stopwatch ran out; it
fails exactly once, by ``reset`` or a timeout. It then stays concluded (so slow waiters
still see it) until the next arrival starts generation + 1; ``previous`` and ``history``
answer waiters that missed the concluded state. A party's rank is its index minus the
departed indices below it (:mod:`barrier_ranges`), the same for every process.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Final

import attrs

from konductor_sdk._kernel.clock import SYSTEM_CLOCK, rfc3339
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._kernel.validate import stored_int
from konductor_sdk._machines import barrier_ranges as ranges
from konductor_sdk._machines.barrier_spec import MAX_EXPECTED as MAX_EXPECTED
from konductor_sdk._machines.barrier_spec import BarrierSpec as BarrierSpec
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
TOO_MANY_DEPARTURES: Final = "TooManyDepartures"

HISTORY_LIMIT: Final = 16
RECENT_LIMIT: Final = 32
"""Arrival batches remembered, so that a client whose write's answer was lost can tell
whether it was applied (and never counts its parties twice)."""
DEPARTED_LIMIT: Final = 128
"""Separate ranges of departed indices one generation may have; past it, it fails. The
CRD checks that the ranges are disjoint, pairwise: 128 keeps that within the API server's
cost limit for one validation rule (256 exceeds it)."""
MISSING_LIMIT: Final = 32
"""Missing parties named in ``status.missing`` (the rest are counted, ``"<n more>"``)."""
MAX_INDEX: Final = 2**53 - 1


# --- normalization -------------------------------------------------------------------


def _strings(value: Any, limit: int) -> list[str]:
    if not isinstance(value, list):
        return []
    seen: dict[str, None] = {}
    for item in value:
        if isinstance(item, str):
            seen.setdefault(item, None)
    return list(seen)[:limit]


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if stored_int(v, 0, minimum=0) > 0}


def _recent(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    out = []
    for item in value:
        if (
            isinstance(item, Mapping)
            and isinstance(item.get("batch"), str)
            and stored_int(item.get("generation"), 0, minimum=0) >= 1
            and stored_int(item.get("firstIndex"), -1, minimum=0) >= 0
            and stored_int(item.get("count"), 0, minimum=0) >= 1
        ):
            out.append(dict(item))
    return out[-RECENT_LIMIT:]


def _normalize_in_place(sp: BarrierSpec, s: Status) -> None:
    s["generation"] = stored_int(s.get("generation"), 1, minimum=1)
    if s.get("phase") not in PHASES:
        s["phase"] = WAITING
    s["nextIndex"] = min(stored_int(s.get("nextIndex"), 0, minimum=0), MAX_INDEX)
    s["departed"] = ranges.clean(s.get("departed"), below=s["nextIndex"])
    s["arrived"] = s["nextIndex"] - ranges.total(s["departed"])
    s["arrivedBy"] = _counts(s.get("arrivedBy"))
    s["recent"] = _recent(s.get("recent"))
    s["quorumEpisode"] = stored_int(s.get("quorumEpisode"), 0, minimum=0)
    history = s.get("history")
    s["history"] = (
        [dict(h) for h in history if isinstance(h, Mapping)][-HISTORY_LIMIT:]
        if isinstance(history, list)
        else []
    )
    if not isinstance(s.get("previous"), Mapping):
        s.pop("previous", None)
    if s["phase"] == WAITING:
        for field in ("openedAt", "failedAt", "reason", "message", "missing"):
            s.pop(field, None)
        if s["arrived"] < sp.effective_quorum:
            s.pop("quorumReachedAt", None)  # a dip below quorum ends the last-call window
    elif "missing" in s:
        s["missing"] = _strings(s["missing"], MISSING_LIMIT + 1)


def normalize(spec: Spec, status: Mapping[str, Any]) -> Status:
    """The status with every default and derived field recomputed (pure, idempotent)."""
    s: Status = copy.deepcopy(dict(status))
    _normalize_in_place(parse_spec(spec), s)
    return s


# --- transitions -------------------------------------------------------------------------


def _record(s: Status, now: str, **fields: Any) -> None:
    item = {
        "generation": s["generation"],
        "phase": s["phase"],
        "at": now,
        "arrived": s["arrived"],
        "nextIndex": s["nextIndex"],
    }
    item.update({k: v for k, v in fields.items() if v})
    s["history"] = [*s["history"], item][-HISTORY_LIMIT:]


def _open(s: Status, now: str) -> None:
    s["phase"] = OPEN
    s["openedAt"] = now
    _record(s, now)


def missing_list(sp: BarrierSpec, s: Mapping[str, Any], named: Sequence[str]) -> list[str]:
    """``status.missing``: the parties known by name that have not arrived (at most
    :data:`MISSING_LIMIT`), then ``"<n more>"`` for those not named."""
    names = list(dict.fromkeys(n for n in named if isinstance(n, str) and n))
    deficit = max(sp.expected - int(s["arrived"]), len(names))
    shown = names[:MISSING_LIMIT]
    rest = deficit - len(shown)
    return [*shown, f"<{rest} more>"] if rest > 0 else shown


def _fail(
    sp: BarrierSpec, s: Status, *, reason: str, message: str, named: Sequence[str], now: str
) -> None:
    s["missing"] = missing_list(sp, s, named)
    s["phase"] = FAILED
    s["failedAt"] = now
    s["reason"] = reason
    s["message"] = message[:4096]
    _record(s, now, reason=reason, message=s["message"])


def _start_next(s: Status) -> None:
    previous: dict[str, Any] = {
        "generation": s["generation"],
        "phase": s["phase"],
        "arrived": s["arrived"],
        "nextIndex": s["nextIndex"],
    }
    if s["departed"]:
        previous["departed"] = s["departed"]
    previous.update(
        {k: s[k] for k in ("openedAt", "failedAt", "reason", "message", "missing") if k in s}
    )
    kept: Status = {k: s[k] for k in ("history", "recent", "observedGeneration") if k in s}
    s.clear()
    s.update(kept)
    s.update(
        generation=previous["generation"] + 1,
        phase=WAITING,
        arrived=0,
        arrivedBy={},
        nextIndex=0,
        departed=[],
        quorumEpisode=0,
        previous=previous,
    )


def _advance_in_place(sp: BarrierSpec, s: Status, now: str) -> None:
    if s["phase"] != WAITING or s["arrived"] == 0:
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
    before = copy.deepcopy(s)
    _advance_in_place(sp, s, now)
    return None if s == before else s


@attrs.frozen
class Arrival:
    """What :func:`arrive` decided.

    Attributes:
        status: the status to write (``None``: nothing to write, the batch is recorded).
        generation: the generation the batch joined.
        first_index: the index of its first party (parties take ``[first, first+count)``).
        count: how many of the batch's parties it took; fewer than asked when the
            generation filled up (the rest arrive in the next write, in the next
            generation), 0 when the write only opens a generation that was due to open.
        recorded: the batch was already recorded (an earlier write whose answer was lost).
    """

    status: Status | None
    generation: int
    first_index: int
    count: int
    recorded: bool = False


def find_batch(status: Mapping[str, Any], batch: str) -> Mapping[str, Any] | None:
    """The ``recent`` record of arrival batch ``batch``, if it is still remembered."""
    for item in _recent(status.get("recent")):
        if item["batch"] == batch:
            return item
    return None


def arrive(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    batch: str,
    count: int,
    session: str,
    user: str,
    now: str,
) -> Arrival:
    """Record ``count`` parties of one process (arrival batch ``batch``, of ``user``, whose
    liveness is ``session``) in the waiting generation, or start the next generation if the
    current one has concluded. Idempotent per ``batch``."""
    sp = parse_spec(spec)
    s = normalize(spec, status)
    known = find_batch(s, batch)
    if known is not None:
        return Arrival(None, known["generation"], known["firstIndex"], known["count"], True)
    if s["phase"] == WAITING:
        _advance_in_place(sp, s, now)
        if s["phase"] != WAITING:
            # It was due to open (expected lowered): this write opens it, no arrival in
            # it; the batch arrives in the next write, in the next generation.
            return Arrival(s, s["generation"], s["nextIndex"], 0)
    else:
        _start_next(s)
    take = max(0, min(count, sp.expected - s["arrived"], MAX_INDEX - s["nextIndex"]))
    first = s["nextIndex"]
    if take == 0:
        return Arrival(None, s["generation"], first, 0)
    if first == 0:
        s["startedAt"] = now
    s["nextIndex"] = first + take
    s["arrived"] += take
    s["arrivedBy"][user] = s["arrivedBy"].get(user, 0) + take
    record = {
        "batch": batch,
        "generation": s["generation"],
        "firstIndex": first,
        "count": take,
        "session": session,
        "user": user,
    }
    s["recent"] = [*s["recent"], record][-RECENT_LIMIT:]
    _advance_in_place(sp, s, now)
    return Arrival(s, s["generation"], first, take)


def arrival_applied(
    status: Mapping[str, Any], *, batch: str, generation: int, first_index: int
) -> bool | None:
    """Whether the arrival write of ``batch``, computed to take index ``first_index`` of
    ``generation``, was applied, judged on a status read after the write's answer was lost:
    ``True``/``False``, or ``None`` if that can no longer be told (the batch at that
    position dropped out of ``recent``)."""
    s = normalize({"expected": MAX_EXPECTED}, status)
    if find_batch(s, batch) is not None:
        return True
    if s["generation"] < generation:
        return False
    if s["generation"] == generation:
        next_index = s["nextIndex"]
    else:
        record = _generation_record(s, generation)
        if record is None:
            return None
        next_index = stored_int(record.get("nextIndex"), -1, minimum=0)
        if next_index < 0:
            return None
    if next_index <= first_index:
        return False  # nobody took that index: not us either
    for item in s["recent"]:
        if item["generation"] == generation and item["firstIndex"] == first_index:
            return False  # the one write that could take that index was someone else's
    return None


def _generation_record(s: Mapping[str, Any], generation: int) -> Mapping[str, Any] | None:
    previous = s.get("previous") or {}
    if stored_int(previous.get("generation"), 0, minimum=0) == generation:
        return previous
    for record in s["history"]:
        if isinstance(record, Mapping) and record.get("generation") == generation:
            return record
    return None


def depart(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    generation: int,
    spans: Sequence[tuple[int, int]],
    user: str,
    now: str,
) -> Status | None:
    """Withdraw the arrivals at index ranges ``spans`` (``(first, count)``) of ``user``
    while ``generation`` waits; indices already departed are not departed twice.
    ``None`` if there is nothing to withdraw (or ``user`` has fewer arrivals than that).
    If the generation would need more than :data:`DEPARTED_LIMIT` ranges, it fails
    instead (reason ``TooManyDepartures``)."""
    sp = parse_spec(spec)
    s = normalize(spec, status)
    if s["generation"] != generation or s["phase"] != WAITING:
        return None
    departed, removed = s["departed"], 0
    for first, count in spans:
        end = min(first + count, s["nextIndex"])
        if first < 0 or end <= first:
            continue
        departed, added = ranges.add(departed, first, end - first)
        removed += added
    if removed == 0 or s["arrivedBy"].get(user, 0) < removed:
        return None
    if len(departed) > DEPARTED_LIMIT:
        message = (
            f"more than {DEPARTED_LIMIT} separate ranges of arrivals left generation "
            f"{generation} before it opened (status.departed is bounded); arrive again"
        )
        _fail(sp, s, reason=TOO_MANY_DEPARTURES, message=message, named=(), now=now)
        return s
    s["departed"] = departed
    s["arrived"] -= removed
    left = s["arrivedBy"][user] - removed
    if left:
        s["arrivedBy"][user] = left
    else:
        del s["arrivedBy"][user]
    _normalize_in_place(sp, s)
    return s


def fail(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    generation: int,
    reason: str,
    message: str,
    missing: Sequence[str] = (),
    now: str,
) -> Status | None:
    """Fail ``generation`` if it is still the waiting one; ``None`` otherwise. ``missing``
    names parties known to be absent (the rest are counted)."""
    s = normalize(spec, status)
    if s["generation"] != generation or s["phase"] != WAITING:
        return None
    _fail(parse_spec(spec), s, reason=reason, message=message, named=missing, now=now)
    return s


def reset(
    spec: Spec, status: Mapping[str, Any], *, now: str, message: str, missing: Sequence[str] = ()
) -> Status | None:
    """Fail the waiting generation (``reason: Reset``) if anyone is counted in it."""
    s = normalize(spec, status)
    if s["phase"] != WAITING or s["arrived"] == 0:
        return None
    _fail(parse_spec(spec), s, reason=RESET, message=message, named=missing, now=now)
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
    """``spec.timeoutSeconds`` while the generation waits and someone has arrived in it
    (even if all of them left since), else ``None``."""
    return _timeout_seconds(parse_spec(spec), normalize(spec, status))


def _timeout_seconds(sp: BarrierSpec, s: Mapping[str, Any]) -> float | None:
    if sp.timeout is None or s["phase"] != WAITING or s["nextIndex"] == 0:
        return None
    return sp.timeout


# --- operator hooks ----------------------------------------------------------------------


def operator_grace(seconds: float) -> float:
    """How much later than the waiters the operator fails a generation that timed out.

    The waiters know the missing parties' names (they watched the arrival claims), the
    operator does not; so the operator is the backstop for a generation nobody waits on.
    """
    return min(max(seconds * 0.05, 1.0), 10.0)


def _timer(obj: KObject) -> tuple[Hashable, float] | None:
    s = normalize(obj.spec, obj.status)
    seconds = _timeout_seconds(parse_spec(obj.spec), s)
    if seconds is None:
        return None
    return ((obj.uid, s["generation"]), seconds + operator_grace(seconds))


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


def drop_sessions(obj: KObject, dead: frozenset[str], claims: Sequence[KObject]) -> Status | None:
    """The operator's reaping: withdraw the arrivals of dead sessions from the waiting
    generation — those of their arrival claims, and those of the ``recent`` batches that
    name them (a process that died between its arrival write and its claim). Indices
    already departed are not departed twice. ``None`` if nothing changes."""
    s = normalize(obj.spec, obj.status)
    if s["phase"] != WAITING:
        return None
    generation = s["generation"]
    spans: dict[str, list[tuple[int, int]]] = {}
    for claim in claims:
        spec = claim.spec
        if (
            spec.get("session") not in dead
            or stored_int(spec.get("generation"), 0, minimum=0) != generation
        ):
            continue
        target = spec.get("target") or {}
        if target.get("kind") != BARRIER.kind or target.get("name") != obj.name:
            continue
        first, parties = stored_int(spec.get("firstIndex"), -1, minimum=0), spec.get("parties")
        if first < 0 or not isinstance(parties, list) or not parties:
            continue
        user = claim.creator or _user_of_batch(s, generation, first)
        if user:
            spans.setdefault(user, []).append((first, len(parties)))
    for item in s["recent"]:
        if item.get("session") in dead and item["generation"] == generation:
            user = str(item.get("user", ""))
            if user:
                spans.setdefault(user, []).append((item["firstIndex"], item["count"]))
    now = rfc3339(SYSTEM_CLOCK.now())
    current: Status | None = None
    for user, user_spans in spans.items():
        new = depart(
            obj.spec,
            current if current is not None else s,
            generation=generation,
            spans=user_spans,
            user=user,
            now=now,
        )
        if new is not None:
            current = new
    return current


def _user_of_batch(s: Mapping[str, Any], generation: int, first: int) -> str:
    for item in s["recent"]:
        if item["generation"] == generation and item["firstIndex"] == first:
            return str(item.get("user", ""))
    return ""


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


def _recent_sessions(obj: KObject) -> frozenset[str]:
    recent = obj.status.get("recent")
    if not isinstance(recent, list):
        return frozenset()
    return frozenset(
        str(item["session"])
        for item in recent
        if isinstance(item, Mapping) and isinstance(item.get("session"), str)
    )


RULES: Final = register(
    KindRules(
        kind=BARRIER,
        entry_maps=(),
        normalize=normalize,
        timer=_timer,
        on_timeout=on_timeout,
        gauges=_gauges,
        describe=_describe,
        drop_sessions=drop_sessions,
        sessions_of=_recent_sessions,
    )
)

"""Pure state of a Once: at most one runner at a time, exactly one recorded outcome.

Layout (see ``docs/barrier.md``, section Once)::

    phase: Pending|Running|Done|Failed
    holders: {<key>: {session, creator, holder, attempt, acquiredAt}}   # the runner; <= 1
    attempts: 3                           # claims so far; the runner's entry has its number
    result: '{"rows": 3}'                 # Done: the function's value as JSON text
    error: {type, message}                # Failed: what the function raised
    startedAt, completedAt, completedBy

The runner's liveness is its session: no per-entry renewal. A caller claims the Once by
CAS when it is Pending, or takes over from a runner whose session it judged dead (it
replaces the very entry it judged: same key, attempt and session). The operator removes a
runner whose session died (Pending again). Only the current runner records the outcome,
and only once: Done and Failed are final until :func:`reset`.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping
from typing import Any, Final

from konductor_sdk._kernel.objects import ONCE, KObject
from konductor_sdk._kernel.validate import stored_int
from konductor_sdk._machines.rules import KindRules, register

Spec = Mapping[str, Any]
Status = dict[str, Any]

PENDING: Final = "Pending"
RUNNING: Final = "Running"
DONE: Final = "Done"
FAILED: Final = "Failed"
PHASES: Final = (PENDING, RUNNING, DONE, FAILED)
MAX_RESULT_BYTES: Final = 65_536
MAX_MESSAGE_CHARS: Final = 4_096


def normalize(spec: Spec, status: Mapping[str, Any]) -> Status:
    """Defaults and consistency: a Running Once whose runner was reaped is Pending again;
    a concluded one has no runner. Pure and idempotent."""
    s: Status = copy.deepcopy(dict(status))
    raw = s.get("holders")
    holders = (
        {str(k): dict(v) for k, v in raw.items() if isinstance(v, Mapping)}
        if isinstance(raw, Mapping)
        else {}
    )
    phase = s.get("phase") if s.get("phase") in PHASES else PENDING
    if phase in (DONE, FAILED):
        holders = {}
    elif holders:
        phase = RUNNING
    else:
        phase = PENDING
    s["phase"] = phase
    s["holders"] = holders
    s["attempts"] = stored_int(s.get("attempts"), 0, minimum=0)
    if phase != DONE:
        s.pop("result", None)
    if phase != FAILED:
        s.pop("error", None)
    if phase not in (DONE, FAILED):
        s.pop("completedAt", None)
        s.pop("completedBy", None)
    return s


def runner(status: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """``(key, entry)`` of the current runner, if any."""
    holders = status.get("holders") or {}
    for key, entry in holders.items():
        return str(key), entry
    return None


def marker(key: str, entry: Mapping[str, Any]) -> Hashable:
    """What identifies one run: a takeover replaces only the run it judged dead."""
    return (key, entry.get("attempt"), entry.get("session"))


def claim(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    key: str,
    entry: Mapping[str, Any],
    now: str,
    takeover: Hashable | None = None,
) -> Status | None:
    """Become the runner (``entry``: session, creator, holder...): when nobody runs, or
    when the runner is still exactly the run ``takeover`` (its :func:`marker`) the caller
    judged dead. ``None`` if not allowed."""
    s = normalize(spec, status)
    if s["phase"] in (DONE, FAILED):
        return None
    current = runner(s)
    if current is not None:
        if takeover is None or marker(*current) != takeover:
            return None
        del s["holders"][current[0]]
    s["attempts"] += 1
    s["holders"][key] = {**entry, "attempt": s["attempts"]}
    s["phase"] = RUNNING
    s["startedAt"] = now
    return s


def _may_record(s: Status, key: str, attempt: int) -> bool:
    # Only the current run records (the admission policy checks the runner's creator).
    entry = s["holders"].get(key)
    return s["phase"] == RUNNING and entry is not None and entry.get("attempt") == attempt


def complete(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    key: str,
    attempt: int,
    result: str,
    holder: str,
    now: str,
) -> Status | None:
    """Record ``result`` (JSON text) as the outcome; ``None`` if this runner may not."""
    s = normalize(spec, status)
    if not _may_record(s, key, attempt):
        return None
    s.update(phase=DONE, holders={}, result=result, completedAt=now, completedBy=holder)
    return s


def fail(
    spec: Spec,
    status: Mapping[str, Any],
    *,
    key: str,
    attempt: int,
    error_type: str,
    message: str,
    holder: str,
    now: str,
) -> Status | None:
    """Record a failure as the outcome; ``None`` if this runner may not."""
    s = normalize(spec, status)
    if not _may_record(s, key, attempt):
        return None
    error = {"type": error_type[:256], "message": message[:MAX_MESSAGE_CHARS]}
    s.update(phase=FAILED, holders={}, error=error, completedAt=now, completedBy=holder)
    return s


def release(
    spec: Spec, status: Mapping[str, Any], *, key: str, attempt: int | None
) -> Status | None:
    """Give up running (the caller was cancelled): Pending again, someone else may run.
    ``attempt=None`` releases claim ``key`` whatever its attempt (its number unknown)."""
    s = normalize(spec, status)
    entry = s["holders"].get(key)
    if entry is None or (attempt is not None and entry.get("attempt") != attempt):
        return None
    del s["holders"][key]
    return normalize(spec, s)


def reset(spec: Spec, status: Mapping[str, Any]) -> Status | None:
    """Forget the outcome (and any runner): the next caller runs the function again.
    ``attempts`` keeps counting, so attempt numbers are never reused."""
    s = normalize(spec, status)
    kept: Status = {k: s[k] for k in ("attempts", "observedGeneration") if k in s}
    fresh = normalize(spec, kept)
    return None if fresh == s else fresh


def _gauges(obj: KObject) -> Mapping[str, float]:
    s = normalize(obj.spec, obj.status)
    return {
        "running": 1.0 if s["phase"] == RUNNING else 0.0,
        "done": 1.0 if s["phase"] == DONE else 0.0,
        "failed": 1.0 if s["phase"] == FAILED else 0.0,
        "attempts": float(s["attempts"]),
    }


def _describe(obj: KObject) -> str:
    s = normalize(obj.spec, obj.status)
    current = runner(s)
    who = f" by {current[1].get('holder', current[0])}" if current else ""
    return f"{s['phase']}{who} after {s['attempts']} attempt(s)"


RULES: Final = register(
    KindRules(
        kind=ONCE,
        entry_maps=("holders",),
        normalize=normalize,
        gauges=_gauges,
        describe=_describe,
    )
)

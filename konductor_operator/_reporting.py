"""What the core controller tells the world: Events, metrics and logs of changes it sees
and of the writes it makes. Nothing here decides anything or writes an object."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any, Final

from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines.rules import KindRules

from ._context import OperatorContext
from ._events import EventRecorder
from ._reaping import (
    EXPIRED,
    POD_DELETED,
    POD_FAILED,
    POD_REPLACED,
    POD_SUCCEEDED,
    SESSION_ENDED,
    EntryId,
    Removal,
)
from ._tracker import Observation

_ENTRY_EVENTS: Final = {
    "holders": ("Granted", "Released"),
    "readers": ("Granted", "Released"),
    "writers": ("Granted", "Released"),
    "arrivals": ("Arrived", "Departed"),
}

_REASON_TEXT: Final = {
    EXPIRED: "not renewed within its ttlSeconds",
    POD_DELETED: "its pod was deleted",
    POD_REPLACED: "its pod was replaced (same name, new UID)",
    POD_SUCCEEDED: "its pod succeeded",
    POD_FAILED: "its pod failed",
    SESSION_ENDED: "its session ended (expired, deleted, or its pod ended)",
}


def entry_events(kind: str, map_name: str) -> tuple[str, str] | None:
    """(added, removed) Event reasons for entries of ``map_name``; ``None``: no Events.

    Queues (``waiters``, ``candidates``) change on every request and would only add noise.
    """
    if kind == "Lease" and map_name == "holders":
        return ("LeaderChanged", "LeaderReleased")
    return _ENTRY_EVENTS.get(map_name)


def report_changes(
    events: EventRecorder,
    rules: KindRules,
    obj: KObject,
    change: Observation,
    reaping: Set[EntryId],
) -> None:
    """Events for what one watch event changed (grants, releases, phase changes).

    ``reaping``: entries the operator is removing itself (reported as ``Reaped`` instead).
    The first sight of an object reports nothing: at startup that would be every entry.
    """
    if change.first:
        return
    kind = rules.kind.kind
    for (map_name, key), entry in change.added:
        reasons = entry_events(kind, map_name)
        if reasons is not None:
            events.emit(obj, reasons[0], _entry_text(entry, map_name, key, "added"))
    for entry_id, entry in change.removed:
        reasons = entry_events(kind, entry_id[0])
        if reasons is not None and entry_id not in reaping:
            events.emit(obj, reasons[1], _entry_text(entry, *entry_id, "removed"))
    if change.old_phase != change.new_phase and change.new_phase is not None:
        summary = _describe(rules, obj)
        if change.new_phase == "Failed":
            events.emit(obj, "Failed", _failure_text(obj) or summary, type="Warning")
        elif change.new_phase == "Open":
            events.emit(obj, "Opened", summary)
        else:
            events.emit(obj, "PhaseChanged", f"{change.old_phase} -> {change.new_phase}: {summary}")


def report_write(
    ctx: OperatorContext,
    rules: KindRules,
    obj: KObject,
    applied: tuple[Removal, ...],
    *,
    fired: bool,
    drift: bool,
    counted: bool = False,
) -> None:
    """Metrics, Events and a log line for one status write by the core controller."""
    kind = rules.kind.kind
    metrics, now = ctx.metrics, ctx.clock.monotonic()
    why = (
        "timeout"
        if fired
        else "reap"
        if applied
        else "drift"
        if drift
        else "count"
        if counted
        else "other"
    )
    metrics.writes.labels(kind, why).inc()
    if fired:
        metrics.timeouts.labels(kind).inc()
    for removal in applied:
        metrics.reaped.labels(kind, removal.reason).inc()
        if removal.expired_at is not None:
            metrics.reap_lag.labels(kind).observe(max(0.0, now - removal.expired_at))
        ctx.events.emit(
            obj,
            "Reaped",
            f"removed {removal.entry[0]} entry {removal.entry[1]} of {removal.holder}: "
            f"{_REASON_TEXT.get(removal.reason, removal.reason)}",
            type="Warning" if removal.reason in (EXPIRED, POD_FAILED) else "Normal",
        )
    ctx.logger.info(
        "wrote %s %s/%s",
        kind,
        obj.namespace,
        obj.name,
        extra={
            "kind": kind,
            "namespace": obj.namespace,
            "object": obj.name,
            "why": why,
            "reaped": [f"{r.entry[0]}/{r.entry[1]}:{r.reason}" for r in applied],
        },
    )


def _entry_text(entry: Mapping[str, Any], map_name: str, key: str, what: str) -> str:
    holder = entry.get("holder", "?")
    token = entry.get("token")
    tail = f" (token {token})" if token is not None else ""
    return f"{map_name} entry {key} of {holder} {what}{tail}"


def _describe(rules: KindRules, obj: KObject) -> str:
    if rules.describe is None:
        return f"phase {obj.status.get('phase')}"
    try:
        return rules.describe(obj)
    except Exception:  # a summary is decoration; never let it break reporting
        return f"phase {obj.status.get('phase')}"


def _failure_text(obj: KObject) -> str:
    for condition in obj.status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("message"):
            return str(condition["message"])
    return str(obj.status.get("message", ""))

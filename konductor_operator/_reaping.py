"""Pure reaping logic: which entries may go, and the status without them.

Nothing here does I/O or reads a clock, so every rule can be tested exhaustively and the
same functions decide on the object judged and, inside the CAS loop, on the fresh object
read after a conflict.

The safety rule: an entry is removed only if the fresh object still holds *the same*
entry that was judged dead — same key and same :func:`entry_marker` (TTL) or
:func:`entry_identity` (pod lifecycle). A renewal in between changes the marker, so a
holder that renewed after we judged it is never removed by a stale judgment.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, Final

import attrs

from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines.rules import KindRules, Status, base_status

EntryId = tuple[str, str]
"""``(map name, entry key)`` of one entry in a status."""

EXPIRED: Final = "Expired"
POD_DELETED: Final = "PodDeleted"
POD_REPLACED: Final = "PodReplaced"
POD_SUCCEEDED: Final = "PodSucceeded"
POD_FAILED: Final = "PodFailed"
SESSION_ENDED: Final = "SessionEnded"
REASONS: Final = (EXPIRED, POD_DELETED, POD_REPLACED, POD_SUCCEEDED, POD_FAILED, SESSION_ENDED)

_TERMINAL_PHASES: Final = {"Succeeded": POD_SUCCEEDED, "Failed": POD_FAILED}


def entry_identity(entry: Mapping[str, Any]) -> Hashable:
    """What makes an entry *the same grant*: owner, token, grant time, pod UID."""
    pod = entry.get("pod")
    pod_uid = pod.get("uid") if isinstance(pod, Mapping) else None
    return (
        _frozen(entry.get("holder")),
        _frozen(entry.get("token")),
        _frozen(entry.get("acquiredAt")),
        _frozen(pod_uid),
    )


def entry_marker(entry: Mapping[str, Any]) -> Hashable:
    """The identity plus ``renewCount``: changes on every renewal (what observers watch)."""
    return (entry_identity(entry), _frozen(entry.get("renewCount")))


def _frozen(value: Any) -> Hashable:
    # Fields are JSON scalars by design; anything else is compared by its repr so that a
    # malformed entry still gets a stable, hashable marker instead of crashing the reaper.
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def entry_ttl(entry: Mapping[str, Any]) -> float | None:
    """``ttlSeconds`` if the entry expires by time; ``None`` for 0, missing or malformed.

    ``ttlSeconds: 0`` means "reaped by pod lifecycle only"; a missing or non-numeric TTL
    is treated the same way, because reaping an entry we cannot judge is the unsafe choice.
    Only entries renewed on their own (``renewCount``: a lease holder) expire by time; an
    entry that merely names a session lives as long as the session.
    """
    if "renewCount" not in entry:
        return None
    ttl = entry.get("ttlSeconds")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        return None
    return float(ttl)


def entry_pod(entry: Mapping[str, Any]) -> PodRef | None:
    pod = entry.get("pod")
    return PodRef.from_dict(pod) if isinstance(pod, Mapping) else None


def iter_entries(
    rules: KindRules, status: Mapping[str, Any]
) -> Iterator[tuple[EntryId, Mapping[str, Any]]]:
    """Every TTL entry in the kind's entry maps (malformed maps/entries are skipped)."""
    for map_name in rules.entry_maps:
        entries = status.get(map_name)
        if not isinstance(entries, Mapping):
            continue
        for key, entry in entries.items():
            if isinstance(entry, Mapping):
                yield (map_name, str(key)), entry


@attrs.frozen
class Removal:
    """One entry judged dead.

    Attributes:
        entry: ``(map, key)``.
        reason: one of :data:`REASONS`.
        match: the :func:`entry_marker` (for ``Expired``) or :func:`entry_identity` (pod
            reasons) the entry had when judged; it is removed only if it still has it.
        holder: for Events and logs.
        expired_at: observer-monotonic time the TTL ran out (``Expired`` only).
    """

    entry: EntryId
    reason: str
    match: Hashable
    holder: str = ""
    expired_at: float | None = None

    def matches(self, entry: Mapping[str, Any]) -> bool:
        if self.reason == EXPIRED:
            return entry_marker(entry) == self.match
        if self.reason == SESSION_ENDED:
            return (entry_identity(entry), entry.get("session")) == self.match
        return entry_identity(entry) == self.match


def expired_removal(entry_id: EntryId, entry: Mapping[str, Any], expired_at: float) -> Removal:
    return Removal(entry_id, EXPIRED, entry_marker(entry), str(entry.get("holder", "")), expired_at)


def pod_removal(entry_id: EntryId, entry: Mapping[str, Any], reason: str) -> Removal:
    return Removal(entry_id, reason, entry_identity(entry), str(entry.get("holder", "")))


def session_removal(entry_id: EntryId, entry: Mapping[str, Any]) -> Removal:
    match = (entry_identity(entry), entry.get("session"))
    return Removal(entry_id, SESSION_ENDED, match, str(entry.get("holder", "")))


def pod_verdict(ref: PodRef, pod: KObject | None) -> str | None:
    """Why the entry's pod is over, judged on ``pod`` (the current object of that name, or
    ``None`` if it does not exist); ``None`` while it may still be running.

    The caller must only pass ``None`` / a different-UID pod after confirming it with a
    fresh read: a lagging cache would otherwise reap a holder whose pod just started.
    """
    if pod is None:
        return POD_DELETED
    if ref.uid and pod.uid and pod.uid != ref.uid:
        return POD_REPLACED
    phase = (pod.status or {}).get("phase")
    return _TERMINAL_PHASES.get(str(phase)) if phase is not None else None


def apply_removals(
    rules: KindRules, obj: KObject, removals: Iterable[Removal]
) -> tuple[Status, tuple[Removal, ...]]:
    """``obj``'s normalized status without the removals that still match, and those
    removals. Starts from :func:`base_status` (a copy: ``obj`` usually belongs to a shared
    watch cache, and a kind such as the Gate drops conclusions of another generation)."""
    new = base_status(rules, obj)
    applied: list[Removal] = []
    for removal in removals:
        map_name, key = removal.entry
        entries = new.get(map_name)
        if not isinstance(entries, dict):
            continue
        entry = entries.get(key)
        if isinstance(entry, Mapping) and removal.matches(entry):
            del entries[key]
            applied.append(removal)
    return rules.normalize(obj.spec, new), tuple(applied)


def drifted(rules: KindRules, obj: KObject) -> bool:
    """Whether the stored status differs from what the kind's ``normalize`` derives."""
    return rules.normalize(obj.spec, base_status(rules, obj)) != dict(obj.status)


def phase_of(obj: KObject) -> str | None:
    phase = obj.status.get("phase")
    return str(phase) if phase is not None else None

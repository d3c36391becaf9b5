"""Pure state of a Lease: who holds it, who may take it, who should get it next.

Every function here maps ``(spec, status, facts)`` to a new status (or ``None``: nothing to
write) without I/O, so the SDK (inside a compare-and-swap), the operator (after reaping) and
the hypothesis state machine all run the very same code. The one fact that is not in the
object is which entries the caller judges *expired*: that is decided on the caller's own
monotonic clock (see :class:`~konductor_sdk._entries.ExpiryTracker`) and passed in as a set
of entry keys, because wall-clock timestamps written by someone else are never compared.

Status layout (see ``docs/lease.md``)::

    holders:         {<key>: entry + token + priority}   # at most one
    candidates:      {<key>: entry + priority}           # waiters, renewed while waiting
    fencingToken:    17          # last token granted; +1 in the write that grants
    transitions:     17          # acquisitions so far (client-go's leaseTransitions)
    holder:          "<identity>" or ""                  # derived, for printer columns
    acquireTime / renewTime                              # derived, for humans only
    preferredHolder: "<identity>" or ""                  # derived: a waiting candidate
                                                         # outranks the holder
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from konductor_sdk._kernel.errors import WouldBlock
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._machines.rules import KindRules, Status, register

DEFAULT_TTL_SECONDS = 15
MAX_CANDIDATES = 32
MAX_PRIORITY = 2**31 - 1

Entry = Mapping[str, Any]


def holder_entry(status: Mapping[str, Any]) -> tuple[str, Entry] | None:
    """The current holder as ``(key, entry)``; the highest token wins should there be two."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    if not holders:
        return None
    key = max(holders, key=lambda k: (int(holders[k].get("token", 0)), k))
    return key, holders[key]


def _priority(entry: Entry) -> int:
    return int(entry.get("priority", 0))


def top_candidate(
    status: Mapping[str, Any], *, ignore: Set[str] = frozenset()
) -> tuple[str, Entry] | None:
    """The candidate that should lead next: highest priority, ties broken by key."""
    candidates: Mapping[str, Entry] = status.get("candidates") or {}
    keys = [k for k in candidates if k not in ignore]
    if not keys:
        return None
    key = min(keys, key=lambda k: (-_priority(candidates[k]), k))
    return key, candidates[key]


def normalize(spec: Mapping[str, Any], status: Status) -> Status:
    """Recompute every derived field; pure, total and idempotent."""
    out: Status = dict(status)
    holders = {str(k): dict(v) for k, v in (status.get("holders") or {}).items()}
    candidates = {str(k): dict(v) for k, v in (status.get("candidates") or {}).items()}
    out["holders"] = holders
    out["candidates"] = candidates
    tokens = [int(e.get("token", 0)) for e in holders.values()]
    out["fencingToken"] = max([int(status.get("fencingToken", 0)), *tokens])
    out["transitions"] = int(status.get("transitions", 0))
    current = holder_entry(out)
    out["preferredHolder"] = ""
    if current is None:
        out["holder"] = ""
        out.pop("acquireTime", None)
        out.pop("renewTime", None)
        return out
    _, entry = current
    out["holder"] = str(entry.get("holder", ""))
    out["acquireTime"] = str(entry.get("acquiredAt", ""))
    out["renewTime"] = str(entry.get("renewedAt", ""))
    top = top_candidate(out)
    if top is not None and _priority(top[1]) > _priority(entry):
        out["preferredHolder"] = str(top[1].get("holder", ""))
    return out


def blocked_by(
    status: Mapping[str, Any],
    *,
    priority: int,
    expired: Set[str],
    candidate_key: str | None = None,
) -> str | None:
    """Why a caller of ``priority`` may not take the lease now, or ``None`` if it may.

    Args:
        expired: keys of entries the caller has judged expired on its own clock.
        candidate_key: the caller's own candidate entry, which never blocks it.
    """
    current = holder_entry(status)
    if current is not None and current[0] not in expired:
        return f"held by {current[1].get('holder', '?')!s}"
    top = top_candidate(status, ignore={*expired, *([candidate_key] if candidate_key else [])})
    if top is not None and _priority(top[1]) > priority:
        return (
            f"candidate {top[1].get('holder', '?')!s} has higher priority "
            f"({_priority(top[1])} > {priority})"
        )
    return None


def _without(mapping: Mapping[str, Entry], keys: Set[str]) -> dict[str, Entry]:
    return {k: v for k, v in mapping.items() if k not in keys}


def acquire(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    key: str,
    entry: Entry,
    priority: int,
    expired: Set[str],
    candidate_key: str | None = None,
) -> Status:
    """Grant the lease to ``key``: the new status, with the next fencing token.

    Entries in ``expired`` are dropped in the same write (the caller has waited out their
    TTL on its own clock), and so is the caller's own candidate entry.

    Raises:
        WouldBlock: the lease is held by an unexpired holder, or a live candidate of higher
            priority is waiting.
    """
    reason = blocked_by(status, priority=priority, expired=expired, candidate_key=candidate_key)
    if reason is not None:
        raise WouldBlock(reason)
    token = int(status.get("fencingToken", 0)) + 1
    drop = {*expired, *([candidate_key] if candidate_key else [])}
    new: Status = dict(status)
    new["holders"] = {key: {**entry, "token": token, "priority": priority}}
    new["candidates"] = _without(status.get("candidates") or {}, drop)
    new["fencingToken"] = token
    new["transitions"] = int(status.get("transitions", 0)) + 1
    return normalize(spec, new)


def release(
    spec: Mapping[str, Any], status: Mapping[str, Any], *, key: str, token: int | None = None
) -> Status | None:
    """Drop the holder ``key`` (if it still holds grant ``token``); ``None`` if not held."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    entry = holders.get(key)
    if entry is None or (token is not None and int(entry.get("token", -1)) != token):
        return None
    new: Status = dict(status)
    new["holders"] = _without(holders, {key})
    return normalize(spec, new)


def register_candidate(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    key: str,
    entry: Entry,
    priority: int,
    expired: Set[str] = frozenset(),
) -> Status | None:
    """Add a waiting candidate; ``None`` if it is registered already or the map is full.

    Candidates the caller judged expired are dropped to make room.
    """
    candidates: Mapping[str, Entry] = status.get("candidates") or {}
    if key in candidates:
        return None
    kept = _without(candidates, expired)
    if len(kept) >= MAX_CANDIDATES:
        return None
    new: Status = dict(status)
    new["candidates"] = {**kept, key: {**entry, "priority": priority}}
    return normalize(spec, new)


def forget(spec: Mapping[str, Any], status: Mapping[str, Any], *, keys: Set[str]) -> Status | None:
    """Remove entries ``keys`` from both maps (cleanup after cancellation); ``None`` if absent."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    candidates: Mapping[str, Entry] = status.get("candidates") or {}
    if not any(k in holders or k in candidates for k in keys):
        return None
    new: Status = dict(status)
    new["holders"] = _without(holders, keys)
    new["candidates"] = _without(candidates, keys)
    return normalize(spec, new)


def yield_to(status: Mapping[str, Any], *, key: str, identity: str) -> str | None:
    """The identity the holder ``key`` should hand over to, or ``None`` to keep leading."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    preferred = str(status.get("preferredHolder") or "")
    if key not in holders or not preferred or preferred == identity:
        return None
    return preferred


def gauges(obj: KObject) -> Mapping[str, float]:
    status = obj.status
    return {
        "held": 1.0 if status.get("holders") else 0.0,
        "candidates": float(len(status.get("candidates") or {})),
        "fencing_token": float(status.get("fencingToken", 0)),
        "transitions": float(status.get("transitions", 0)),
    }


def describe(obj: KObject) -> str:
    status = obj.status
    holder = status.get("holder") or "nobody"
    text = f"held by {holder} (token {status.get('fencingToken', 0)})"
    if status.get("preferredHolder"):
        text += f", yielding to {status['preferredHolder']}"
    return text


RULES = register(
    KindRules(
        kind=LEASE,
        entry_maps=("holders", "candidates"),
        normalize=normalize,
        gauges=gauges,
        describe=describe,
    )
)

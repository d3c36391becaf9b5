"""Pure state of a Lease: who holds it, who may write next, and the writes themselves.

Nothing here does I/O or reads a clock: the SDK, the operator and the hypothesis state
machines all run this very code. The facts that are not in the object are passed in as
values: when *this observer* judges the holder expired (its own monotonic clock, see
:class:`~konductor_sdk._kernel.entries.ExpiryTracker`), since when it has seen the lease
free, whether it may remove the holder (same user), and how many live candidates
(Claims) are ahead of it.

Status layout (``docs/lease.md``)::

    holders:         {<key>: {holder, creator, session, token, priority, ttlSeconds,
                              renewCount, acquiredAt, renewedAt, claim?, pod?}}   # at most one
    fencingToken:    17     # last token granted; +1 in the write that grants (CRD rule)
    transitions:     17     # acquisitions so far (client-go's leaseTransitions)
    holder:          "<identity>" or ""       # mirrors the entry (CRD rule), for kubectl
    acquireTime / renewTime                   # mirror the entry's times, for humans
    preferredHolder: "<identity>" or ""       # set by a waiting candidate that outranks
                                              # the holder: please hand over

Candidates are not in the object: each is a ``Claim``, ordered ``(-priority,
resourceVersion)`` (:mod:`konductor_sdk._kernel.claims`). Every write is a JSON patch whose
``test`` operations the server checks on the version it applies it to, so a write made on
a stale view fails (HTTP 422) instead of undoing someone else's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from konductor_sdk._kernel.objects import LEASE, KObject, json_pointer
from konductor_sdk._machines.rules import KindRules, Status, register

DEFAULT_TTL_SECONDS: Final = 15

Entry = Mapping[str, Any]
JsonPatch = list[dict[str, Any]]


def holder_entry(status: Mapping[str, Any]) -> tuple[str, Entry] | None:
    """The current holder as ``(key, entry)``; the highest token wins should there be two."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    if not holders:
        return None
    key = max(holders, key=lambda k: (int(holders[k].get("token", 0)), k))
    return key, holders[key]


def ttl_of(spec: Mapping[str, Any]) -> int:
    ttl = spec.get("ttlSeconds", DEFAULT_TTL_SECONDS)
    return ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0 else 15


def normalize(spec: Mapping[str, Any], status: Status) -> Status:
    """The status with its mirror fields recomputed from the holder entry; pure, total,
    idempotent, and equal to what the SDK's own writes produce (so the operator only ever
    writes to repair a hand-made status)."""
    del spec
    out: Status = dict(status)
    out.pop("candidates", None)  # the v1 layout kept waiters here; they are Claims now
    holders = {str(k): dict(v) for k, v in (status.get("holders") or {}).items()}
    out["holders"] = holders
    tokens = [int(e.get("token", 0)) for e in holders.values()]
    out["fencingToken"] = max([int(status.get("fencingToken", 0)), *tokens])
    out["transitions"] = int(status.get("transitions", 0))
    current = holder_entry(out)
    if current is None:
        out["holder"] = ""
        out["preferredHolder"] = ""
        return out  # acquireTime/renewTime stay: they describe the last holder
    entry = current[1]
    out["holder"] = str(entry.get("holder", ""))
    for field, source in (("acquireTime", "acquiredAt"), ("renewTime", "renewedAt")):
        if source in entry:
            out[field] = entry[source]
    preferred = str(status.get("preferredHolder") or "")
    out["preferredHolder"] = "" if preferred == out["holder"] else preferred
    return out


# -- who may write -------------------------------------------------------------------------


@attrs.frozen
class Observation:
    """What one observer knows about a lease besides the object itself.

    Attributes:
        now: the observer's monotonic time.
        holder_expires_at: when the holder entry expires on the observer's clock (its
            ``renewCount`` unchanged for its ``ttlSeconds`` since the observer first saw
            it); ``None`` when there is no holder.
        free_since: since when the observer has seen the lease free in its current state
            (``None``: not free, or not seen free yet).
        may_remove_holder: the holder entry was created by the observer's user, so the
            server lets it take over an expired one (else only the operator may remove it).
        ahead: live candidates ahead of the caller in service order (0: it is the head).
    """

    now: float
    holder_expires_at: float | None
    free_since: float | None
    may_remove_holder: bool
    ahead: int


Action = Literal["grant", "prefer", "wait"]


@attrs.frozen
class Verdict:
    """What a candidate should do now.

    ``grant``: write the grant (it may still lose to another write: then judge again);
    ``prefer``: ask the holder to hand over (write ``preferredHolder``);
    ``wait``: until the next change, or until ``at`` (observer-monotonic) at the latest.
    """

    action: Action
    reason: str
    at: float | None = None


def head_delay(ahead: int, ttl: float) -> float:
    """How long after the lease became takeable a candidate with ``ahead`` candidates in
    front of it may write too: at once for the head; otherwise one more lease duration
    (the head may be dead and not yet reaped), spread over the next one by position
    (``ttl * (2 - 1/ahead)``), so that the first live candidate acts before the rest and a
    dead head never blocks the lease for more than two lease durations."""
    if ahead <= 0:
        return 0.0
    return ttl * (2.0 - 1.0 / ahead)


def judge(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    obs: Observation,
    *,
    identity: str,
    priority: int,
) -> Verdict:
    """Whether the candidate ``identity`` (of ``priority``) should write now."""
    current = holder_entry(status)
    if current is not None:
        _, entry = current
        holder = str(entry.get("holder", "?"))
        expires = obs.holder_expires_at
        if expires is None or obs.now < expires:
            if (
                obs.ahead == 0
                and priority > _priority(entry)
                and str(status.get("preferredHolder") or "") != identity
            ):
                return Verdict(
                    "prefer", f"held by {holder} with a lower priority ({_priority(entry)})"
                )
            return Verdict("wait", f"held by {holder}", expires)
        if not obs.may_remove_holder:
            return Verdict(
                "wait",
                f"held by {holder}, expired on our clock; it was granted to another user, "
                "so only the operator may remove it",
            )
        takeable_since = expires
    else:
        takeable_since = obs.free_since if obs.free_since is not None else obs.now
    eligible = takeable_since + head_delay(obs.ahead, ttl_of(spec))
    if obs.now >= eligible:
        return Verdict("grant", "free" if current is None else "expired")
    return Verdict("wait", f"{obs.ahead} candidate(s) ahead", eligible)


def _priority(entry: Entry) -> int:
    priority = entry.get("priority", 0)
    return priority if isinstance(priority, int) else 0


def yield_to(status: Mapping[str, Any], *, key: str, identity: str) -> str | None:
    """The identity the holder ``key`` should hand over to, or ``None`` to keep holding."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    preferred = str(status.get("preferredHolder") or "")
    if key not in holders or not preferred or preferred == identity:
        return None
    return preferred


# -- the writes ----------------------------------------------------------------------------


def _holder_path(key: str, *fields: str) -> str:
    return json_pointer("status", "holders", key, *fields)


def grant_patch(status: Mapping[str, Any], *, key: str, entry: Entry) -> tuple[JsonPatch, int]:
    """The JSON patch granting the lease to ``key`` on the status as observed, and the
    token it grants.

    It applies only if no grant happened since (``test fencingToken``) and, when it takes
    over an expired holder, only if that holder has not renewed since it was judged
    (``test`` of its token and renewCount); it replaces the holder map, clears
    ``preferredHolder`` and takes the next token, all in one write.
    """
    token = int(status.get("fencingToken", 0)) + 1
    ops: JsonPatch = [{"op": "test", "path": "/status/fencingToken", "value": token - 1}]
    current = holder_entry(status)
    if current is not None:
        old_key, old = current
        ops += [
            {"op": "test", "path": _holder_path(old_key, "token"), "value": old.get("token")},
            {"op": "test", "path": _holder_path(old_key, "renewCount"), "value": old["renewCount"]},
        ]
    granted = {**entry, "token": token}
    transitions = int(status.get("transitions", 0)) + 1
    ops += [
        {"op": "add", "path": "/status/holders", "value": {key: granted}},
        {"op": "replace", "path": "/status/fencingToken", "value": token},
        {"op": "add", "path": "/status/transitions", "value": transitions},
        {"op": "add", "path": "/status/holder", "value": granted["holder"]},
        {"op": "add", "path": "/status/preferredHolder", "value": ""},
    ]
    if "acquiredAt" in granted:
        ops.append({"op": "add", "path": "/status/acquireTime", "value": granted["acquiredAt"]})
    if "renewedAt" in granted:
        ops.append({"op": "add", "path": "/status/renewTime", "value": granted["renewedAt"]})
    return ops, token


def renew_patch(*, key: str, token: int, renew_count: int, now: str) -> JsonPatch:
    """The holder's renewal: applies only while the entry is still this grant."""
    return [
        {"op": "test", "path": _holder_path(key, "token"), "value": token},
        {"op": "replace", "path": _holder_path(key, "renewCount"), "value": renew_count},
        {"op": "replace", "path": _holder_path(key, "renewedAt"), "value": now},
        {"op": "add", "path": "/status/renewTime", "value": now},
    ]


def release_patch(*, key: str, token: int) -> JsonPatch:
    """Give grant ``token`` up (fails with 422, harmlessly, if it is gone already)."""
    return [
        {"op": "test", "path": _holder_path(key, "token"), "value": token},
        {"op": "remove", "path": _holder_path(key)},
        {"op": "add", "path": "/status/holder", "value": ""},
        {"op": "add", "path": "/status/preferredHolder", "value": ""},
    ]


def prefer_patch(*, key: str, token: int, identity: str) -> JsonPatch:
    """Ask the holder of grant ``token`` to hand over to ``identity``."""
    return [
        {"op": "test", "path": _holder_path(key, "token"), "value": token},
        {"op": "add", "path": "/status/preferredHolder", "value": identity},
    ]


def unprefer_patch(*, identity: str) -> JsonPatch:
    """Withdraw our handoff request (a candidate that stops waiting)."""
    return [
        {"op": "test", "path": "/status/preferredHolder", "value": identity},
        {"op": "replace", "path": "/status/preferredHolder", "value": ""},
    ]


def forget(spec: Mapping[str, Any], status: Mapping[str, Any], *, keys: Any) -> Status | None:
    """The status without the holder entries ``keys`` (an admin's forced release); ``None``
    if none of them is there."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    if not any(k in holders for k in keys):
        return None
    new: Status = dict(status)
    new["holders"] = {k: v for k, v in holders.items() if k not in keys}
    return normalize(spec, new)


# -- for the operator ----------------------------------------------------------------------


def gauges(obj: KObject) -> Mapping[str, float]:
    status = obj.status
    return {
        "held": 1.0 if status.get("holders") else 0.0,
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
        entry_maps=("holders",),
        normalize=normalize,
        gauges=gauges,
        describe=describe,
    )
)

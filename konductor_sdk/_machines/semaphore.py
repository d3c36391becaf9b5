"""Pure state of the semaphore family (Semaphore, Mutex, RWMutex): the object as data.

Everything here is a function of ``(spec, status)`` with no I/O and no clock, so the SDK,
the operator and the tests run the very same code. Layout of ``status`` (docs/semaphore.md)::

    fencingToken: 42                         # the last token issued; only ever grows
    holders:                                 # one entry per grant, keyed by its FIRST slot
      "0": {weight: 2, token: 41, session, creator, holder, priority, preemptible,
            grantedAt, pod?, claim?, mode?, burst?, ttlSeconds?, renewCount?}
      "2": {weight: 1, token: 42, ...}       # a grant of weight w holds slots [k, k+w)
    preemptRequests:                         # a waiter asks a holder to yield, by its token
      "41": {creator, session, claim, priority}
    inUse, available, burstInUse, holderCount, queueLength, phase, ...   # aggregates

A grant is written by its waiter alone (:mod:`.semaphore_plan` decides which); the queue
is a set of ``Claim`` objects, not part of this status. The aggregates are written only by
the operator (:func:`normalize_for`), never by clients.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final

import attrs

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, SEMAPHORE, KObject, ResourceKind
from konductor_sdk._kernel.validate import stored_int
from konductor_sdk._machines.rules import KindRules, register

Spec = Mapping[str, Any]
Status = dict[str, Any]
Entry = Mapping[str, Any]

PERMITS_MAX: Final = 1_000_000
BURST_SECONDS_DEFAULT: Final = 60
BURST_SECONDS_MAX: Final = 86_400
MAX_HOLDERS: Final = 4096
"""Most grants one object holds at once (``maxProperties`` of ``status.holders``): a waiter
that would exceed it waits, like one that does not fit. The queue itself is unbounded."""
RW_MAX_READERS_DEFAULT: Final = 1024
RW_MAX_READERS_MAX: Final = MAX_HOLDERS

AGGREGATES: Final = (
    "inUse",
    "available",
    "burstInUse",
    "holderCount",
    "queueLength",
    "phase",
    "currentHolder",
    "readers",
    "writer",
    "observedGeneration",
)
"""Status fields derived from the rest; written by the operator only (policies/semaphore.yaml)."""


@attrs.frozen
class Grant:
    """One entry of ``status.holders``, parsed.

    Attributes:
        slot: the first slot; the grant holds ``slot .. slot + weight - 1``.
        deadline_seconds: ``ttlSeconds`` when the entry is time-bounded (a burst grant, or
            a holder yielding to a preemption request); ``None`` otherwise.
    """

    slot: int
    weight: int
    token: int
    session: str
    creator: str
    holder: str
    priority: int
    preemptible: bool
    burst: bool
    mode: str | None
    claim: str | None
    deadline_seconds: int | None

    @property
    def end(self) -> int:
        return self.slot + self.weight

    @property
    def slots(self) -> range:
        return range(self.slot, self.end)


def parse_grant(key: str, entry: Any) -> Grant | None:
    """The :class:`Grant` stored under ``key``, or ``None`` if malformed (never raises)."""
    if not isinstance(entry, Mapping) or not key.isdigit():
        return None
    weight = stored_int(entry.get("weight"), 1)
    token = stored_int(entry.get("token"), 0)
    if weight < 1 or token < 1:
        return None
    ttl = entry.get("ttlSeconds")
    bounded = isinstance(ttl, int) and not isinstance(ttl, bool)
    return Grant(
        slot=int(key),
        weight=weight,
        token=token,
        session=str(entry.get("session", "")),
        creator=str(entry.get("creator", "")),
        holder=str(entry.get("holder", "")),
        priority=stored_int(entry.get("priority"), 0),
        preemptible=entry.get("preemptible") is True,
        burst=entry.get("burst") is True,
        mode=entry.get("mode") if entry.get("mode") in ("read", "write") else None,
        claim=str(entry["claim"]) if entry.get("claim") else None,
        deadline_seconds=ttl if bounded else None,
    )


def grants(status: Mapping[str, Any]) -> list[Grant]:
    """Every well-formed grant of ``status``, by slot."""
    holders = status.get("holders")
    if not isinstance(holders, Mapping):
        return []
    found = (parse_grant(str(k), e) for k, e in holders.items())
    return sorted((g for g in found if g is not None), key=lambda g: g.slot)


def preempt_requests(status: Mapping[str, Any]) -> dict[int, Entry]:
    """``status.preemptRequests`` by the token of the holder asked to yield."""
    found = status.get("preemptRequests")
    if not isinstance(found, Mapping):
        return {}
    return {int(k): e for k, e in found.items() if str(k).isdigit() and isinstance(e, Mapping)}


def fencing_token(status: Mapping[str, Any]) -> int:
    return max(0, stored_int(status.get("fencingToken"), 0))


@attrs.frozen
class LockKind:
    """What differs between the three kinds sharing this machinery.

    Attributes:
        kind: the resource.
        limit: ``spec -> units`` regular grants may fill (``permits``, 1, ``maxReaders``).
        burst: ``spec -> extra units`` only time-bounded burst grants may use.
        weight: ``(spec, request fields) -> units`` a request takes (``weight``, or a
            writer's ``maxReaders``).
        exclusive_writers: an RWMutex: a writer is granted only alone, and nobody is
            granted while a writer holds, whatever the weights say (``maxReaders`` may
            have changed since the writer was granted).
        aggregate: adds the kind's own derived fields (phase...) to a status in place.
    """

    kind: ResourceKind
    limit: Callable[[Spec], int]
    burst: Callable[[Spec], int]
    weight: Callable[[Spec, Entry], int]
    exclusive_writers: bool
    aggregate: Callable[[Spec, Status, list[Grant]], None]

    def size(self, spec: Spec) -> int:
        """Slots ``0 .. size-1`` a new grant may occupy: the limit plus the burst room."""
        return self.limit(spec) + self.burst(spec)


def _sem_aggregate(spec: Spec, status: Status, held: list[Grant]) -> None:
    limit = SEMAPHORE_KIND.limit(spec)
    used = sum(g.weight for g in held)
    status["phase"] = "Full" if used >= limit else "Ready"
    status["burstInUse"] = sum(g.weight for g in held if g.burst)


def _mutex_aggregate(spec: Spec, status: Status, held: list[Grant]) -> None:
    status["phase"] = "Locked" if held else "Unlocked"
    if held:
        status["currentHolder"] = min(held, key=lambda g: g.token).holder
    else:
        status.pop("currentHolder", None)


def _rw_aggregate(spec: Spec, status: Status, held: list[Grant]) -> None:
    writers = [g for g in held if g.mode == "write"]
    status["readers"] = len(held) - len(writers)
    if writers:
        status["phase"] = "Writing"
        status["writer"] = writers[0].holder
    else:
        status["phase"] = "Reading" if held else "Unlocked"
        status.pop("writer", None)


def max_readers(spec: Spec) -> int:
    return min(
        max(1, stored_int(spec.get("maxReaders"), RW_MAX_READERS_DEFAULT)), RW_MAX_READERS_MAX
    )


SEMAPHORE_KIND = LockKind(
    kind=SEMAPHORE,
    limit=lambda spec: max(1, stored_int(spec.get("permits"), 1)),
    burst=lambda spec: max(0, stored_int(spec.get("burst"), 0)),
    weight=lambda spec, e: max(1, stored_int(e.get("weight"), 1)),
    exclusive_writers=False,
    aggregate=_sem_aggregate,
)
MUTEX_KIND = LockKind(
    kind=MUTEX,
    limit=lambda spec: 1,
    burst=lambda spec: 0,
    weight=lambda spec, e: 1,
    exclusive_writers=False,
    aggregate=_mutex_aggregate,
)
# A writer takes every slot, a reader one: the slots' non-overlap is the exclusion.
RWMUTEX_KIND = LockKind(
    kind=RWMUTEX,
    limit=max_readers,
    burst=lambda spec: 0,
    weight=lambda spec, e: max_readers(spec) if e.get("mode") == "write" else 1,
    exclusive_writers=True,
    aggregate=_rw_aggregate,
)
KINDS: Final = {k.kind.kind: k for k in (SEMAPHORE_KIND, MUTEX_KIND, RWMUTEX_KIND)}

# Names from before the v2 object model, still used by konductor_operator/_gate_refs.py
# and the operator's tests (the lead renames those).
SEMAPHORE_FLAVOR = SEMAPHORE_KIND
FLAVORS = KINDS


def burst_seconds(spec: Spec) -> int:
    """How long a burst grant may last (``spec.burstSeconds``)."""
    return max(1, stored_int(spec.get("burstSeconds"), BURST_SECONDS_DEFAULT))


def fits_ever(kind: LockKind, spec: Spec, request: Entry) -> bool:
    """Whether a request could be granted at all, into an otherwise empty object."""
    w = kind.weight(spec, request)
    limit = kind.limit(spec)
    return w <= limit or (request.get("allowBurst") is True and w <= limit + kind.burst(spec))


def check_fits(kind: LockKind, spec: Spec, request: Entry, what: str) -> None:
    """Raise :class:`ConfigurationError` if ``request`` could never be granted."""
    if not fits_ever(kind, spec, request):
        w = kind.weight(spec, request)
        limit = kind.limit(spec)
        burst = kind.burst(spec) if request.get("allowBurst") is True else 0
        extra = f" + burst {burst}" if request.get("allowBurst") is True else ""
        raise ConfigurationError(
            f"{what}: weight must be <= {limit + burst} (limit {limit}{extra}), got {w}"
        )


def in_use(status: Mapping[str, Any]) -> int:
    """Units held by all grants (burst grants included)."""
    return sum(g.weight for g in grants(status))


def normalize_for(kind: LockKind) -> Callable[[Spec, Status], Status]:
    """The kind's ``KindRules.normalize``: the aggregates recomputed, moot requests dropped.

    ``queueLength`` counts Claims, which a status does not show: it is kept as found (the
    operator sets it from the claims it watches, with :func:`claim_counts`). Grants are
    never changed here.
    """

    def normalize(spec: Spec, status: Status) -> Status:
        out: Status = copy.deepcopy(dict(status or {}))
        held = grants(out)
        tokens = {g.token for g in held}
        requests = out.get("preemptRequests")
        if isinstance(requests, dict):
            out["preemptRequests"] = {
                k: e for k, e in requests.items() if str(k).isdigit() and int(k) in tokens
            }
        limit = kind.limit(spec)
        used = sum(g.weight for g in held)
        out["inUse"] = used
        out["available"] = max(0, limit - used)
        out["holderCount"] = len(held)
        out["queueLength"] = max(0, stored_int(out.get("queueLength"), 0))
        kind.aggregate(spec, out, held)
        return out

    return normalize


def claim_counts(status: Mapping[str, Any], claims: AbstractSet[str]) -> Mapping[str, int]:
    """``queueLength``: the live claims on the object that no grant names yet (a granted
    waiter deletes its claim only after its grant is written)."""
    # O(grants), not O(claims): this runs on every change of the object.
    granted = sum(1 for g in grants(status) if g.claim is not None and g.claim in claims)
    return {"queueLength": len(claims) - granted}


def _gauges(kind: LockKind) -> Callable[[KObject], Mapping[str, float]]:
    def gauges(obj: KObject) -> Mapping[str, float]:
        held = grants(obj.status)
        return {
            "in_use": float(sum(g.weight for g in held)),
            "limit": float(kind.limit(obj.spec)),
            "holders": float(len(held)),
            "waiters": float(stored_int(obj.status.get("queueLength"), 0)),
        }

    return gauges


def _describe(kind: LockKind) -> Callable[[KObject], str]:
    def describe(obj: KObject) -> str:
        st = obj.status
        return (
            f"{in_use(st)}/{kind.limit(obj.spec)} in use, "
            f"{len(grants(st))} holders, "
            f"fencing token {fencing_token(st)}"
        )

    return describe


for _kind in KINDS.values():
    register(
        KindRules(
            kind=_kind.kind,
            # Entries naming a session: grants, and the requests of waiting claims.
            entry_maps=("holders", "preemptRequests"),
            normalize=normalize_for(_kind),
            gauges=_gauges(_kind),
            describe=_describe(_kind),
            claim_counts=claim_counts,
        )
    )

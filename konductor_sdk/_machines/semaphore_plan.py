"""Who is granted next, on which slots, and the JSON patches that say so (pure).

**Slots.** A grant of weight ``w`` occupies ``w`` adjacent slots ``[k, k+w)`` of
``0 .. permits+burst-1`` and is stored under its first slot ``k``. The server refuses a
grant that overlaps another (policies/semaphore.yaml), so every slot has at most one holder
at a time, and a downstream resource can fence per slot (:class:`~konductor_sdk.Fence`).
A new grant goes into the smallest free run that fits it (best fit), which keeps long runs
free for heavy requests.

**Fairness.** :func:`plan` walks the queue (claims by ``(-priority, resourceVersion)``) and
finds the longest prefix that fits: each request there is granted, taking the next
fencing token. The first request that does not fit is the *head*; it blocks everyone behind
it (so a heavy request is never starved by light ones), may take burst units itself, and
asks lower-priority preemptible holders to yield. A request that could not fit even into
an empty object (the limit was lowered under it) is skipped. Weights must fit *adjacently*:
if the free units are scattered, the head waits until a run frees up; nobody behind it is
granted meanwhile, so the run does form.

Every process computes the same plan from the same object and queue; only the waiters in
the fitting prefix (and a head that needs burst or preemption) write, each for itself.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from konductor_sdk._kernel.objects import KObject, json_pointer
from konductor_sdk._machines.semaphore import (
    MAX_HOLDERS,
    Grant,
    LockKind,
    Spec,
    fencing_token,
    fits_ever,
    grants,
    preempt_requests,
)


@attrs.frozen
class Request:
    """A request for units: one Claim, or a claimless attempt of the fast path.

    Attributes:
        id: the claim's name (or a local id for a claimless request).
        fields: ``weight``/``mode``/``allowBurst``, as in the Claim's spec.
    """

    id: str
    priority: int = 0
    preemptible: bool = False
    allow_burst: bool = False
    fields: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def of_claim(cls, claim: KObject) -> Request:
        return cls.of_spec(claim.name, claim.spec)

    @classmethod
    def of_spec(cls, name: str, spec: Mapping[str, Any]) -> Request:
        """The request of the claim ``name`` with ``spec``."""
        fields = {k: spec[k] for k in ("weight", "mode", "allowBurst") if k in spec}
        prio = spec.get("priority", 0)
        return cls(
            id=name,
            priority=prio if isinstance(prio, int) and not isinstance(prio, bool) else 0,
            preemptible=spec.get("preemptible") is True,
            allow_burst=spec.get("allowBurst") is True,
            fields=fields,
        )

    @property
    def writer(self) -> bool:
        return self.fields.get("mode") == "write"


class FreeSlots:
    """The free runs of slots in ``[0, size)``: ``(start, length)`` sorted by start."""

    def __init__(self, held: Iterable[Grant], size: int) -> None:
        self.size = size
        self._starts: list[int] = []
        self._lengths: list[int] = []
        pos = 0
        for g in sorted(held, key=lambda g: g.slot):
            if g.slot > pos and pos < size:
                self._add(pos, min(g.slot, size) - pos)
            pos = max(pos, g.end)
        if pos < size:
            self._add(pos, size - pos)

    def _add(self, start: int, length: int) -> None:
        self._starts.append(start)
        self._lengths.append(length)

    def __repr__(self) -> str:
        return f"<FreeSlots {list(zip(self._starts, self._lengths, strict=True))}>"

    def place(self, weight: int) -> int | None:
        """The first slot of the smallest free run of at least ``weight`` slots (the
        lowest such run on a tie), or ``None``."""
        best: tuple[int, int] | None = None
        for start, length in zip(self._starts, self._lengths, strict=True):
            if length >= weight and (best is None or length < best[0]):
                best = (length, start)
                if length == weight:
                    break
        return None if best is None else best[1]

    def take(self, slot: int, weight: int) -> None:
        """Mark ``[slot, slot+weight)`` taken (it must lie inside one free run)."""
        i = bisect.bisect_right(self._starts, slot) - 1
        start, length = self._starts[i], self._lengths[i]
        assert start <= slot, (slot, weight, self)
        assert slot + weight <= start + length, (slot, weight, self)
        del self._starts[i], self._lengths[i]
        after = start + length - (slot + weight)
        if after:
            self._starts.insert(i, slot + weight)
            self._lengths.insert(i, after)
        if slot > start:
            self._starts.insert(i, start)
            self._lengths.insert(i, slot - start)


@attrs.frozen
class Placement:
    """One grant the plan makes: ``request`` gets ``weight`` slots from ``slot``."""

    request: str
    slot: int
    weight: int
    burst: bool = False


@attrs.frozen
class Plan:
    """What the queue's next writes should be.

    Attributes:
        grants: the fitting prefix (and a head taking burst units), in queue order.
        head: the first request that does not fit, or ``None``.
        preempt: tokens of holders the head should ask to yield (not asked yet).
        full: the head waits because the object holds :data:`MAX_HOLDERS` grants.
    """

    grants: tuple[Placement, ...] = ()
    head: str | None = None
    preempt: tuple[int, ...] = ()
    full: bool = False


@attrs.define
class _Room:
    """Units and slots left while the plan walks the queue."""

    kind: LockKind
    spec: Spec
    limit: int
    size: int
    regular: int
    total: int
    count: int
    writer: bool
    free: FreeSlots

    @classmethod
    def of(cls, kind: LockKind, spec: Spec, held: Sequence[Grant]) -> _Room:
        limit = kind.limit(spec)
        size = limit + kind.burst(spec)
        return cls(
            kind=kind,
            spec=spec,
            limit=limit,
            size=size,
            regular=sum(g.weight for g in held if not g.burst),
            total=sum(g.weight for g in held),
            count=len(held),
            writer=any(g.mode == "write" for g in held),
            free=FreeSlots(held, size),
        )

    def excluded(self, request: Request) -> bool:
        """An RWMutex writer only alone; nobody while a writer holds."""
        return self.kind.exclusive_writers and (self.writer or (request.writer and self.count > 0))

    def slot_for(self, request: Request, weight: int, *, burst: bool) -> int | None:
        if self.excluded(request) or self.total + weight > self.size:
            return None
        if not burst and self.regular + weight > self.limit:
            return None
        return self.free.place(weight)

    def take(self, request: Request, slot: int, weight: int, *, burst: bool) -> None:
        self.free.take(slot, weight)
        self.total += weight
        self.regular += 0 if burst else weight
        self.count += 1
        self.writer = self.writer or request.writer


def plan(
    kind: LockKind,
    spec: Spec,
    status: Mapping[str, Any],
    queue: Iterable[Request],
    *,
    preempt_for: Callable[[str], bool] | None = None,
) -> Plan:
    """Decide the grants, the head and its preemption requests.

    Args:
        queue: the requests in service order, lazily: only the prefix is consumed.
            Claims already granted (named by a grant's ``claim``) must not be in it.
        preempt_for: whether to compute preemption requests for this head (only its own
            process writes them; ``None``: always).
    """
    held = grants(status)
    room = _Room.of(kind, spec, held)
    out: list[Placement] = []
    for request in queue:
        weight = kind.weight(spec, request.fields)
        if not fits_ever(kind, spec, {**request.fields, "allowBurst": request.allow_burst}):
            continue
        if room.count >= MAX_HOLDERS:
            return Plan(tuple(out), request.id, full=True)
        slot = room.slot_for(request, weight, burst=False)
        burst = False
        if slot is None and request.allow_burst:
            slot = room.slot_for(request, weight, burst=True)
            burst = slot is not None
        if slot is not None:
            room.take(request, slot, weight, burst=burst)
            out.append(Placement(request.id, slot, weight, burst))
            continue
        preempt: tuple[int, ...] = ()
        if preempt_for is None or preempt_for(request.id):
            placed = [_placed(p) for p in out]
            asked = set(preempt_requests(status))
            preempt = _preemption(kind, spec, held, placed, asked, request, weight)
        return Plan(tuple(out), request.id, preempt)
    return Plan(tuple(out))


def _placed(p: Placement) -> Grant:
    """A grant this plan is about to make, as an occupant nobody may preempt."""
    return Grant(
        slot=p.slot,
        weight=p.weight,
        token=0,
        session="",
        creator="",
        holder="",
        priority=0,
        preemptible=False,
        burst=p.burst,
        mode=None,
        claim=p.request,
        deadline_seconds=None,
    )


def _preemption(
    kind: LockKind,
    spec: Spec,
    held: Sequence[Grant],
    placed: Sequence[Grant],
    asked: set[int],
    head: Request,
    weight: int,
) -> tuple[int, ...]:
    """Tokens of holders to ask so that ``head`` fits once they (and those already asked,
    by anyone) have left.

    Only preemptible holders of strictly lower priority are asked, lowest priority and
    newest grant first, as few as needed; if even all of them would not make room, nobody
    is asked (no work is killed in vain).
    """
    candidates = sorted(
        (g for g in held if g.preemptible and g.priority < head.priority and g.token not in asked),
        key=lambda g: (g.priority, -g.token),
    )
    staying = [g for g in held if g.token not in asked]

    def fits(leaving: Sequence[Grant]) -> bool:
        gone = {g.token for g in leaving}
        room = _Room.of(kind, spec, [*(g for g in staying if g.token not in gone), *placed])
        if room.count >= MAX_HOLDERS:
            return False
        return room.slot_for(head, weight, burst=False) is not None

    if not candidates or fits(()):
        return ()
    # Asking more never hurts the fit: find the shortest prefix that fits.
    lo, hi = 1, len(candidates)
    if not fits(candidates):
        return ()
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(candidates[:mid]):
            hi = mid
        else:
            lo = mid + 1
    chosen = list(candidates[:lo])
    if len(chosen) <= 64:
        # A holder that does not help (its slots are not in the run the head gets) is
        # spared; the last one is needed by construction.
        for g in reversed(chosen[:-1]):
            trial = [c for c in chosen if c is not g]
            if fits(trial):
                chosen = trial
    return tuple(sorted(g.token for g in chosen))


# -- patches -----------------------------------------------------------------------------


def _holders_path(slot: int) -> str:
    return json_pointer("status", "holders", str(slot))


def grant_patch(
    obj: KObject,
    entries: Sequence[tuple[int, dict[str, Any]]],
    *,
    drop_requests: Iterable[int] = (),
) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON patch granting ``entries`` (``(first slot, entry without token)``) on the
    version ``obj``, and the tokens it gives them, in order.

    It ``test``s the fencing counter, so it fails (422) if any grant was made since
    ``obj``; releases in between do not make it fail. On a status without a counter yet
    (the object's first grant) it tests the resourceVersion instead. ``drop_requests``
    are preemption requests of these waiters to withdraw (they must exist in ``obj``).
    """
    status = obj.status
    first = fencing_token(status)
    tokens = [first + i + 1 for i in range(len(entries))]
    holders = {
        str(slot): {**entry, "token": token}
        for (slot, entry), token in zip(entries, tokens, strict=True)
    }
    cas = {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version}
    ops: list[dict[str, Any]] = []
    if "status" not in obj.raw:
        value = {"fencingToken": tokens[-1], "holders": holders}
        return [cas, {"op": "add", "path": "/status", "value": value}], tokens
    if "fencingToken" in status:
        ops.append({"op": "test", "path": "/status/fencingToken", "value": first})
    else:
        ops.append(cas)
    if isinstance(status.get("holders"), Mapping):
        ops += [
            {"op": "add", "path": _holders_path(int(k)), "value": e} for k, e in holders.items()
        ]
    else:
        ops.append({"op": "add", "path": "/status/holders", "value": holders})
    ops.append({"op": "add", "path": "/status/fencingToken", "value": tokens[-1]})
    present = preempt_requests(status)
    ops += [
        {"op": "remove", "path": json_pointer("status", "preemptRequests", str(t))}
        for t in sorted(set(drop_requests))
        if t in present
    ]
    return ops, tokens


def release_patch(slot: int, token: int) -> list[dict[str, Any]]:
    """Remove the grant at ``slot`` if it is still the one with ``token`` (else 422)."""
    path = _holders_path(slot)
    return [
        {"op": "test", "path": f"{path}/token", "value": token},
        {"op": "remove", "path": path},
    ]


def deadline_patch(slot: int, token: int, ttl_seconds: int) -> list[dict[str, Any]]:
    """Make the grant at ``slot`` a time-bounded entry (a holder yielding to preemption):
    the operator reaps it ``ttl_seconds`` after it sees this, if it is still there."""
    path = _holders_path(slot)
    return [
        {"op": "test", "path": f"{path}/token", "value": token},
        {"op": "add", "path": f"{path}/ttlSeconds", "value": ttl_seconds},
        {"op": "add", "path": f"{path}/renewCount", "value": 0},
    ]


def request_patch(
    status: Mapping[str, Any], requests: Mapping[int, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Add preemption requests ``{holder token: request}``."""
    if not isinstance(status.get("preemptRequests"), Mapping):
        value = {str(t): dict(r) for t, r in requests.items()}
        return [{"op": "add", "path": "/status/preemptRequests", "value": value}]
    return [
        {"op": "add", "path": json_pointer("status", "preemptRequests", str(t)), "value": dict(r)}
        for t, r in requests.items()
    ]


def withdraw_patch(status: Mapping[str, Any], tokens: Iterable[int]) -> list[dict[str, Any]]:
    """Remove the preemption requests on ``tokens`` that ``status`` still has."""
    present = preempt_requests(status)
    return [
        {"op": "remove", "path": json_pointer("status", "preemptRequests", str(t))}
        for t in sorted(set(tokens))
        if t in present
    ]

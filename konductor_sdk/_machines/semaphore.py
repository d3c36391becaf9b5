"""Pure state of the semaphore family: Semaphore, Mutex and RWMutex.

Everything here is a function of ``(spec, status)`` with no I/O and no clock, so the SDK
(on every write), the operator (after reaping) and the tests (hypothesis) run the very same
code. Layout of ``status`` (see ``docs/semaphore.md``)::

    holders:  {<key>: entry + weight, priority, preemptible, token, burst, preemptRequested}
    waiters:  {<key>: entry + weight, priority, preemptible, ticket, allowBurst}
    nextTicket, fencingToken                      # counters, only ever increase
    inUse, available, holderCount, queueLength, phase, ...   # derived by normalize()

The queue order is ``(-priority, ticket)``. :func:`plan` walks it and finds the *prefix*
of waiters that fit into the free units: those are promoted to holders (each taking the
next fencing token) by whoever writes next. The first waiter that does not fit is the
*head*; it blocks everyone behind it (so a large request cannot starve), may take burst
units by itself, and asks lower-priority preemptible holders to yield. Waiters that could
not fit even into an empty object (the limit was lowered under them) are skipped rather
than blocking the queue forever.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from konductor_sdk._kernel.errors import ConfigurationError, WouldBlock
from konductor_sdk._kernel.objects import MUTEX, RWMUTEX, SEMAPHORE, KObject, ResourceKind
from konductor_sdk._machines.rules import KindRules, register

Spec = Mapping[str, Any]
Status = dict[str, Any]
Entry = Mapping[str, Any]

PERMITS_MAX = 1_000_000
PRIORITY_MIN = -1_000_000
PRIORITY_MAX = 1_000_000
BURST_SECONDS_DEFAULT = 60
BURST_SECONDS_MAX = 86_400
MAX_HOLDERS = 2048
MAX_WAITERS = 2048
RW_MAX_READERS_DEFAULT = 1024

# Fields a waiter carries that a holder does not, and vice versa.
_WAITER_ONLY = ("ticket", "allowBurst")


def _int(value: Any, default: int) -> int:
    # normalize() must be total: the operator runs it on whatever is stored.
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


@attrs.frozen
class Flavor:
    """What differs between the three kinds sharing this state machine.

    Attributes:
        kind: the resource.
        limit: ``spec -> units`` that regular grants may fill.
        burst: ``spec -> extra units`` usable by time-bounded burst grants.
        weight: ``(spec, entry) -> units`` the entry takes.
        extra: adds kind-specific derived fields (phase...) to a status in place.
    """

    kind: ResourceKind
    limit: Callable[[Spec], int]
    burst: Callable[[Spec], int]
    weight: Callable[[Spec, Entry], int]
    extra: Callable[[Spec, Status, int], None]


def _sem_extra(spec: Spec, status: Status, in_use: int) -> None:
    limit = SEMAPHORE_FLAVOR.limit(spec)
    status["phase"] = "Full" if in_use >= limit else "Ready"
    status["burstInUse"] = max(0, in_use - limit)


def _mutex_extra(spec: Spec, status: Status, in_use: int) -> None:
    holders = status.get("holders") or {}
    status["phase"] = "Locked" if holders else "Unlocked"
    owner = next(iter(sorted(holders.values(), key=_token)), None)
    if owner is not None:
        status["currentHolder"] = str(owner.get("holder", ""))
    else:
        status.pop("currentHolder", None)


def _rw_extra(spec: Spec, status: Status, in_use: int) -> None:
    holders = (status.get("holders") or {}).values()
    writers = [e for e in holders if e.get("mode") == "write"]
    status["readers"] = sum(1 for e in holders if e.get("mode") != "write")
    if writers:
        status["phase"] = "Writing"
        status["writer"] = str(writers[0].get("holder", ""))
    else:
        status["phase"] = "Reading" if status["readers"] else "Unlocked"
        status.pop("writer", None)


def _rw_limit(spec: Spec) -> int:
    return max(1, _int(spec.get("maxReaders"), RW_MAX_READERS_DEFAULT))


SEMAPHORE_FLAVOR = Flavor(
    kind=SEMAPHORE,
    limit=lambda spec: max(1, _int(spec.get("permits"), 1)),
    burst=lambda spec: max(0, _int(spec.get("burst"), 0)),
    weight=lambda spec, e: max(1, _int(e.get("weight"), 1)),
    extra=_sem_extra,
)
MUTEX_FLAVOR = Flavor(
    kind=MUTEX,
    limit=lambda spec: 1,
    burst=lambda spec: 0,
    weight=lambda spec, e: 1,
    extra=_mutex_extra,
)
# A writer takes every unit, a reader one: the writer excludes everyone, readers share.
RWMUTEX_FLAVOR = Flavor(
    kind=RWMUTEX,
    limit=_rw_limit,
    burst=lambda spec: 0,
    weight=lambda spec, e: _rw_limit(spec) if e.get("mode") == "write" else 1,
    extra=_rw_extra,
)


def burst_seconds(spec: Spec) -> int:
    """How long a burst grant may last (``spec.burstSeconds``)."""
    return max(1, _int(spec.get("burstSeconds"), BURST_SECONDS_DEFAULT))


def _token(entry: Entry) -> int:
    return _int(entry.get("token"), 0)


def queue(status: Mapping[str, Any]) -> list[tuple[str, Entry]]:
    """Waiters in service order: higher priority first, then arrival (ticket)."""
    waiters: Mapping[str, Entry] = status.get("waiters") or {}
    return sorted(
        waiters.items(),
        key=lambda kv: (-_int(kv[1].get("priority"), 0), _int(kv[1].get("ticket"), 0), kv[0]),
    )


def in_use(flavor: Flavor, spec: Spec, status: Mapping[str, Any]) -> int:
    """Units taken by all holders (burst grants included)."""
    holders: Mapping[str, Entry] = status.get("holders") or {}
    return sum(flavor.weight(spec, e) for e in holders.values())


def fits_ever(flavor: Flavor, spec: Spec, entry: Entry) -> bool:
    """Whether ``entry`` could be granted at all, into an otherwise empty object."""
    w = flavor.weight(spec, entry)
    limit = flavor.limit(spec)
    return w <= limit or (bool(entry.get("allowBurst")) and w <= limit + flavor.burst(spec))


@attrs.frozen
class Plan:
    """What the next write on an object should do.

    Attributes:
        promote: waiter keys, in queue order, that fit now and become holders.
        head: the first waiter (in order) that does not fit, or ``None``.
        head_burst: the head may take burst units (it asked to and they fit).
        preempt: holder keys the head should ask to yield (not yet asked).
    """

    promote: tuple[str, ...] = ()
    head: str | None = None
    head_burst: bool = False
    preempt: tuple[str, ...] = ()

    def needs_write_by(self, key: str) -> bool:
        """Whether the waiter ``key`` should write now (only the head(s) do: no herd)."""
        return key in self.promote or (key == self.head and (self.head_burst or bool(self.preempt)))


def plan(flavor: Flavor, spec: Spec, status: Mapping[str, Any]) -> Plan:
    """Decide grants, the head, and preemption requests for ``(spec, status)``."""
    limit = flavor.limit(spec)
    used = in_use(flavor, spec, status)
    regular = limit - used
    burst_room = limit + flavor.burst(spec) - used
    promote: list[str] = []
    for key, entry in queue(status):
        if not fits_ever(flavor, spec, entry):
            continue
        w = flavor.weight(spec, entry)
        if w <= regular:
            promote.append(key)
            regular -= w
            burst_room -= w
            continue
        head_burst = bool(entry.get("allowBurst")) and w <= burst_room
        preempt = () if head_burst else _preemption(flavor, spec, status, entry, w - regular)
        return Plan(tuple(promote), key, head_burst, preempt)
    return Plan(tuple(promote))


def _preemption(
    flavor: Flavor, spec: Spec, status: Mapping[str, Any], head: Entry, need: int
) -> tuple[str, ...]:
    """Holders to ask to yield so that ``need`` more units free up for ``head``.

    Holders already asked count as freeing their units. Only preemptible holders of
    strictly lower priority are asked, lowest priority and newest grant first; if even
    all of them would not free enough, nobody is asked (no work is killed in vain).
    """
    holders: Mapping[str, Entry] = status.get("holders") or {}
    need -= sum(flavor.weight(spec, e) for e in holders.values() if e.get("preemptRequested"))
    if need <= 0:
        return ()
    prio = _int(head.get("priority"), 0)
    candidates = sorted(
        (
            (k, e)
            for k, e in holders.items()
            if e.get("preemptible")
            and not e.get("preemptRequested")
            and _int(e.get("priority"), 0) < prio
        ),
        key=lambda kv: (_int(kv[1].get("priority"), 0), -_token(kv[1]), kv[0]),
    )
    chosen: list[str] = []
    for key, entry in candidates:
        if need <= 0:
            break
        chosen.append(key)
        need -= flavor.weight(spec, entry)
    return tuple(chosen) if need <= 0 else ()


def _grant(status: Status, key: str, *, now: str | None, burst: bool, ttl: int | None) -> None:
    entry = dict(status["waiters"].pop(key))
    for field in _WAITER_ONLY:
        entry.pop(field, None)
    status["fencingToken"] = _int(status.get("fencingToken"), 0) + 1
    entry["token"] = status["fencingToken"]
    if burst:
        entry["burst"] = True
        # A new renewCount: an observer that keys expiry on it restarts its stopwatch
        # here, after the owner sent this write (the base of the owner's deadline).
        entry["renewCount"] = _int(entry.get("renewCount"), 0) + 1
    if ttl is not None:
        entry["ttlSeconds"] = ttl
    if now is not None:
        entry["grantedAt"] = now
    status.setdefault("holders", {})[key] = entry


def settle_in_place(flavor: Flavor, spec: Spec, status: Status, *, now: str | None = None) -> Plan:
    """Promote every waiter that fits, mark preemption requests, recompute aggregates.

    Returns the plan for the result (what is left for the head to do by itself).
    """
    _maps(status)
    first = plan(flavor, spec, status)
    for key in first.promote:
        _grant(status, key, now=now, burst=False, ttl=None)
    for key in first.preempt:
        status["holders"][key]["preemptRequested"] = True
    after = plan(flavor, spec, status) if (first.promote or first.preempt) else first
    _aggregate(flavor, spec, status)
    return after


def _maps(status: Status) -> None:
    # Total on whatever is stored: the schema forbids these shapes, the operator may still
    # meet them (a schema-less server, a hand edit); an entry that is not a map is dropped.
    for name in ("holders", "waiters"):
        found = status.get(name)
        if not isinstance(found, dict):
            status[name] = {}
        elif not all(isinstance(e, dict) for e in found.values()):
            status[name] = {k: e for k, e in found.items() if isinstance(e, dict)}


def _aggregate(flavor: Flavor, spec: Spec, status: Status) -> None:
    used = in_use(flavor, spec, status)
    limit = flavor.limit(spec)
    status["inUse"] = used
    status["available"] = max(0, limit - used)
    status["holderCount"] = len(status["holders"])
    status["queueLength"] = len(status["waiters"])
    status["fencingToken"] = _int(status.get("fencingToken"), 0)
    status["nextTicket"] = _int(status.get("nextTicket"), 0)
    flavor.extra(spec, status, used)


def normalize_for(flavor: Flavor) -> Callable[[Spec, Status], Status]:
    """The ``KindRules.normalize`` of ``flavor``: :func:`settle_in_place` on a copy."""

    def normalize(spec: Spec, status: Status) -> Status:
        out = copy.deepcopy(dict(status or {}))
        settle_in_place(flavor, spec, out)
        return out

    return normalize


def check_fits(flavor: Flavor, spec: Spec, entry: Entry, what: str) -> None:
    """Raise :class:`ConfigurationError` if ``entry`` could never be granted."""
    if not fits_ever(flavor, spec, entry):
        w = flavor.weight(spec, entry)
        limit = flavor.limit(spec)
        burst = flavor.burst(spec) if entry.get("allowBurst") else 0
        extra = f" + burst {burst}" if entry.get("allowBurst") else ""
        raise ConfigurationError(
            f"{what}: weight must be <= {limit + burst} (limit {limit}{extra}), got {w}"
        )


def request_in_place(
    flavor: Flavor,
    spec: Spec,
    status: Status,
    key: str,
    entry: Entry,
    *,
    now: str | None,
    nowait: bool,
    what: str,
) -> None:
    """Queue ``entry`` under ``key`` and grant whatever the rules allow at once.

    Idempotent for a key already present. Raises:
        ConfigurationError: the entry can never fit (weight above the limit).
        WouldBlock: ``nowait`` and the entry was not granted at once.
    """
    check_fits(flavor, spec, entry, what)
    _maps(status)
    if key in status["holders"] or key in status["waiters"]:
        return
    ticket = _int(status.get("nextTicket"), 0)
    status["nextTicket"] = ticket + 1
    status["waiters"][key] = {**entry, "ticket": ticket}
    self_grant_in_place(flavor, spec, status, key, now=now)
    if nowait and key not in status["holders"]:
        raise WouldBlock(f"{what}: {entry.get('weight', 1)} unit(s) not available now")


def self_grant_in_place(
    flavor: Flavor, spec: Spec, status: Status, key: str, *, now: str | None
) -> None:
    """Settle, then let the waiter ``key`` take burst units if it is the head and may.

    Only the waiter itself does this (never someone else's write): a burst grant is
    bounded in time from the moment its owner *sent* the write, which only it knows.
    """
    after = settle_in_place(flavor, spec, status, now=now)
    if after.head == key and after.head_burst:
        ttl = _int(status["waiters"][key].get("ttlSeconds"), 0)
        limit = burst_seconds(spec)
        _grant(status, key, now=now, burst=True, ttl=min(ttl, limit) if ttl > 0 else limit)
        settle_in_place(flavor, spec, status, now=now)


def release_in_place(status: Status, key: str, token: int | None = None) -> bool:
    """Remove ``key`` from holders (if its token matches) and waiters; True if removed."""
    removed = False
    holders = status.get("holders") or {}
    held = holders.get(key)
    if held is not None and (token is None or _token(held) == token):
        del holders[key]
        removed = True
    waiters = status.get("waiters") or {}
    if key in waiters:
        del waiters[key]
        removed = True
    return removed


def force_release_in_place(status: Status, who: str) -> tuple[str, ...]:
    """Remove holders whose key is ``who``, or whose holder id is ``who``."""
    holders = status.get("holders") or {}
    keys = tuple(k for k, e in holders.items() if who in (k, e.get("holder")))
    for key in keys:
        del holders[key]
    return keys


def _gauges(flavor: Flavor) -> Callable[[KObject], Mapping[str, float]]:
    def gauges(obj: KObject) -> Mapping[str, float]:
        st = obj.status
        return {
            "in_use": float(in_use(flavor, obj.spec, st)),
            "limit": float(flavor.limit(obj.spec)),
            "holders": float(len(st.get("holders") or {})),
            "waiters": float(len(st.get("waiters") or {})),
        }

    return gauges


def _describe(flavor: Flavor) -> Callable[[KObject], str]:
    def describe(obj: KObject) -> str:
        st = obj.status
        return (
            f"{in_use(flavor, obj.spec, st)}/{flavor.limit(obj.spec)} in use, "
            f"{len(st.get('waiters') or {})} waiting, "
            f"fencing token {_int(st.get('fencingToken'), 0)}"
        )

    return describe


FLAVORS = {f.kind.kind: f for f in (SEMAPHORE_FLAVOR, MUTEX_FLAVOR, RWMUTEX_FLAVOR)}

for _flavor in FLAVORS.values():
    register(
        KindRules(
            kind=_flavor.kind,
            entry_maps=("holders", "waiters"),
            normalize=normalize_for(_flavor),
            gauges=_gauges(_flavor),
            describe=_describe(_flavor),
        )
    )

"""What the operator has seen of sessions and claims: expiry clocks, pods, who names whom.

A ``Session`` is one client's liveness (docs/design.md). The operator calls it expired when
its ``renewCount`` has not changed for ``ttlSeconds`` on the operator's own monotonic clock,
counted from when it first saw that value (so a client's wall clock never matters), or
over when its pod is. It then deletes the session — with the resourceVersion it judged, so
a renewal in between wins — and everything that names it is reaped: grants in the
primitives' entry maps, claims, a barrier's arrivals.

The ledger is the only record of them the operator keeps: its session and claim watches
cache nothing and ask it for each object's resourceVersion (``Versions``), so that 100,000
participants cost one small record each (~1.3 KiB with their indexes and timers).

No I/O here: the core controller feeds watch events in and acts on the verdicts.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, final

import attrs

from konductor_sdk._kernel.clock import Clock
from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.watch import Versions

SessionKey = tuple[str, str]
"""``(namespace, name)`` of a session."""
TargetKey = tuple[str, str, str]
"""``(kind, namespace, name)`` of the primitive a claim names (the core's object key)."""

_NONE: Final[frozenset[str]] = frozenset()

DEAD_REMEMBERED: Final = 600.0
"""Seconds a session stays on the dead list after it ended: entries naming it that the
operator learns about later (a lagging watch) are still reaped without a GET."""


def session_of(entry: Mapping[str, Any]) -> str | None:
    """The session an entry names, if any."""
    name = entry.get("session")
    return name if isinstance(name, str) and name else None


@attrs.frozen(weakref_slot=False)
class SlimClaim:
    """What reaping needs of a claim."""

    namespace: str
    name: str
    uid: str
    session: str
    target_kind: str
    target_name: str
    deleting: bool = False
    """Marked for deletion (finalizers or owners hold it back): no longer waiting."""
    resource_version: str = ""

    @property
    def target(self) -> TargetKey:
        return (self.target_kind, self.namespace, self.target_name)


def slim_claim(obj: KObject) -> SlimClaim | None:
    spec = obj.spec
    target = spec.get("target")
    session = spec.get("session")
    if not isinstance(target, Mapping) or not isinstance(session, str):
        return None
    # Interned: the claims of a namespace share its name and their targets' (few).
    return SlimClaim(
        sys.intern(obj.namespace),
        obj.name,
        obj.uid,
        session,
        sys.intern(str(target.get("kind", ""))),
        sys.intern(str(target.get("name", ""))),
        bool(obj.metadata.get("deletionTimestamp")),
        obj.resource_version,
    )


@attrs.frozen(weakref_slot=False)
class _Seen:
    """The one record kept of a live session (its watch keeps no copy of it)."""

    uid: str
    resource_version: str
    ttl: float
    pod: PodRef | None
    renew_count: object
    since: float
    """Monotonic time this ``(uid, renew_count)`` was first seen, with a TTL running: the
    expiry clock's start (a renewal restarts it; so does a TTL that was not running)."""


@final
class SessionLedger:
    """Sessions seen, their expiry, the dead ones, and the claims naming each."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._seen: dict[SessionKey, _Seen] = {}
        self._by_pod: dict[tuple[str, str], set[SessionKey]] = {}
        self._dead: OrderedDict[SessionKey, float] = OrderedDict()
        """Ended sessions by when they ended, oldest first (trimmed from the front: an
        OrderedDict, as a dict's front fills with holes that every trim would walk)."""
        self._claim_records: dict[str, dict[str, SlimClaim]] = {}
        """Claims by namespace and name (a deletion names nothing else)."""
        self._claims: dict[SessionKey, tuple[SlimClaim, ...]] = {}
        self._waiting: dict[TargetKey, set[str]] = {}

    def __repr__(self) -> str:
        claims = sum(len(c) for c in self._claims.values())
        return f"<SessionLedger live={len(self._seen)} dead={len(self._dead)} claims={claims}>"

    def __len__(self) -> int:
        return len(self._seen)

    # -- sessions ----------------------------------------------------------------------

    def observe(self, obj: KObject) -> SessionKey:
        """Record the session's current version; returns its key (a tuple others may
        share rather than build their own: there may be 100,000)."""
        key = (sys.intern(obj.namespace), obj.name)
        spec = obj.spec
        ttl = spec.get("ttlSeconds")
        ttl_s = float(ttl) if isinstance(ttl, int) and not isinstance(ttl, bool) else 0.0
        pod_raw = spec.get("pod")
        pod = PodRef.from_dict(pod_raw) if isinstance(pod_raw, Mapping) else None
        if pod is not None and not pod.namespace:
            pod = attrs.evolve(pod, namespace=key[0])
        renew_count = spec.get("renewCount")
        old = self._seen.get(key)
        since = (
            old.since
            if old is not None
            and old.ttl > 0
            and ttl_s > 0
            and (old.uid, old.renew_count) == (obj.uid, renew_count)
            else self._clock.monotonic()
        )
        if old is not None and old.pod != pod:
            self._unindex_pod(key, old.pod)
        if pod is not None and (old is None or old.pod != pod):
            self._by_pod.setdefault((pod.namespace, pod.name), set()).add(key)
        self._seen[key] = _Seen(obj.uid, obj.resource_version, ttl_s, pod, renew_count, since)
        self._dead.pop(key, None)
        return key

    def ended(self, key: SessionKey) -> None:
        """The session is gone (deleted by anyone): everything naming it may be reaped."""
        seen = self._seen.pop(key, None)
        if seen is not None:
            self._unindex_pod(key, seen.pod)
        self._dead[key] = self._clock.monotonic()
        self._dead.move_to_end(key)  # the dict stays in order of ending
        self._trim()

    def known(self, key: SessionKey) -> bool:
        return key in self._seen

    def is_dead(self, key: SessionKey) -> bool:
        return key in self._dead

    def expires_at(self, key: SessionKey) -> float | None:
        seen = self._seen.get(key)
        return None if seen is None or seen.ttl <= 0 else seen.since + seen.ttl

    def expired(self, key: SessionKey) -> bool:
        at = self.expires_at(key)
        return at is not None and self._clock.monotonic() >= at

    def judged(self, key: SessionKey) -> tuple[str, str] | None:
        """``(uid, resourceVersion)`` of the version last seen, for a conditional delete."""
        seen = self._seen.get(key)
        return None if seen is None else (seen.uid, seen.resource_version)

    def pod(self, key: SessionKey) -> PodRef | None:
        seen = self._seen.get(key)
        return None if seen is None else seen.pod

    def sessions_of_pod(self, namespace: str, name: str) -> list[SessionKey]:
        return list(self._by_pod.get((namespace, name), ()))

    def keys(self) -> list[SessionKey]:
        return list(self._seen)

    def version(self, namespace: str, name: str) -> str | None:
        """The resourceVersion last seen of a live session: the session watch keeps no
        sessions of its own (:class:`~konductor_sdk._kernel.watch.Versions`)."""
        seen = self._seen.get((namespace, name))
        return None if seen is None else seen.resource_version

    def _unindex_pod(self, key: SessionKey, pod: PodRef | None) -> None:
        if pod is None:
            return
        keys = self._by_pod.get((pod.namespace, pod.name))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_pod[(pod.namespace, pod.name)]

    def _trim(self) -> None:
        horizon = self._clock.monotonic() - DEAD_REMEMBERED
        while self._dead:
            key, at = next(iter(self._dead.items()))
            if at >= horizon:
                break
            del self._dead[key]

    # -- claims ------------------------------------------------------------------------

    def observe_claim(self, claim: SlimClaim) -> list[TargetKey]:
        """Record a claim added or changed; the targets whose live claims changed."""
        old = self._claim_records.get(claim.namespace, {}).get(claim.name)
        changed: list[TargetKey] = []
        if old is not None and (old.session, old.target) != (claim.session, claim.target):
            changed = self.forget_claim(claim.namespace, claim.name)
        self._claim_records.setdefault(claim.namespace, {})[claim.name] = claim
        skey = (claim.namespace, claim.session)
        # A tuple per session, not a dict: most sessions have one claim, and 100,000
        # dicts of one would cost more than the claims.
        others = tuple(c for c in self._claims.get(skey, ()) if c.name != claim.name)
        self._claims[skey] = (*others, claim)
        target = claim.target
        names = self._waiting.get(target)
        if claim.deleting:
            if names is not None and claim.name in names:
                self._stop_waiting(target, names, claim.name)
                changed.append(target)
        elif names is None or claim.name not in names:
            self._waiting.setdefault(target, set()).add(claim.name)
            changed.append(target)
        return changed

    def forget_claim(self, namespace: str, name: str) -> list[TargetKey]:
        """The claim is gone (its name is all a deletion needs); the targets whose live
        claims changed."""
        records = self._claim_records.get(namespace)
        claim = records.pop(name, None) if records is not None else None
        if claim is None:
            return []
        if not records:
            del self._claim_records[namespace]
        skey = (namespace, claim.session)
        others = tuple(c for c in self._claims.get(skey, ()) if c.name != name)
        if others:
            self._claims[skey] = others
        else:
            self._claims.pop(skey, None)
        names = self._waiting.get(claim.target)
        if names is None or name not in names:
            return []
        self._stop_waiting(claim.target, names, name)
        return [claim.target]

    def _stop_waiting(self, target: TargetKey, names: set[str], name: str) -> None:
        names.discard(name)
        if not names:
            del self._waiting[target]

    @property
    def claim_versions(self) -> Versions:
        """The claim watch's view of the claims recorded (it keeps none of its own)."""
        return _ClaimVersions(self._claim_records)

    def claims_on(self, target: TargetKey) -> AbstractSet[str]:
        """Names of the live (not deleting) claims naming ``target``; granted ones too."""
        return self._waiting.get(target, _NONE)

    def claims_of(self, key: SessionKey) -> list[SlimClaim]:
        return list(self._claims.get(key, ()))

    def claim_sessions(self) -> Iterable[SessionKey]:
        return list(self._claims)


@final
class _ClaimVersions:
    def __init__(self, records: Mapping[str, Mapping[str, SlimClaim]]) -> None:
        self._records = records

    def version(self, namespace: str, name: str) -> str | None:
        claim = self._records.get(namespace, {}).get(name)
        return None if claim is None else claim.resource_version

    def keys(self) -> list[tuple[str, str]]:
        return [(ns, name) for ns, names in self._records.items() for name in names]

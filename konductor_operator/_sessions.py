"""What the operator has seen of sessions and claims: expiry clocks, pods, who names whom.

A ``Session`` is one client's liveness (docs/design.md). The operator calls it expired when
its ``renewCount`` has not changed for ``ttlSeconds`` on the operator's own monotonic clock,
counted from when it first saw that value (so a client's wall clock never matters), or
over when its pod is. It then deletes the session — with the resourceVersion it judged, so
a renewal in between wins — and everything that names it is reaped: grants in the
primitives' entry maps, claims, a barrier's arrivals.

No I/O here: the core controller feeds watch events in and acts on the verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, final

import attrs

from konductor_sdk._kernel.clock import Clock
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import KObject

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


@attrs.frozen
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

    @property
    def target(self) -> TargetKey:
        return (self.target_kind, self.namespace, self.target_name)


def slim_claim(obj: KObject) -> SlimClaim | None:
    spec = obj.spec
    target = spec.get("target")
    session = spec.get("session")
    if not isinstance(target, Mapping) or not isinstance(session, str):
        return None
    return SlimClaim(
        obj.namespace,
        obj.name,
        obj.uid,
        session,
        str(target.get("kind", "")),
        str(target.get("name", "")),
        bool(obj.metadata.get("deletionTimestamp")),
    )


@attrs.define
class _Seen:
    uid: str
    resource_version: str
    ttl: float
    pod: PodRef | None


@final
class SessionLedger:
    """Sessions seen, their expiry, the dead ones, and the claims naming each."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._seen: dict[SessionKey, _Seen] = {}
        self._clocks = ExpiryTracker(clock)
        self._dead: dict[SessionKey, float] = {}
        self._claims: dict[SessionKey, dict[str, SlimClaim]] = {}
        self._waiting: dict[TargetKey, set[str]] = {}

    def __repr__(self) -> str:
        claims = sum(len(c) for c in self._claims.values())
        return f"<SessionLedger live={len(self._seen)} dead={len(self._dead)} claims={claims}>"

    def __len__(self) -> int:
        return len(self._seen)

    # -- sessions ----------------------------------------------------------------------

    def observe(self, obj: KObject) -> None:
        key = (obj.namespace, obj.name)
        spec = obj.spec
        ttl = spec.get("ttlSeconds")
        ttl_s = float(ttl) if isinstance(ttl, int) and not isinstance(ttl, bool) else 0.0
        pod_raw = spec.get("pod")
        pod = PodRef.from_dict(pod_raw) if isinstance(pod_raw, Mapping) else None
        if pod is not None and not pod.namespace:
            pod = attrs.evolve(pod, namespace=obj.namespace)
        self._seen[key] = _Seen(obj.uid, obj.resource_version, ttl_s, pod)
        if ttl_s > 0:
            self._clocks.observe(key, (obj.uid, spec.get("renewCount")), ttl_s)
        else:
            self._clocks.forget(key)
        self._dead.pop(key, None)

    def ended(self, key: SessionKey) -> None:
        """The session is gone (deleted by anyone): everything naming it may be reaped."""
        self._seen.pop(key, None)
        self._clocks.forget(key)
        self._dead[key] = self._clock.monotonic()
        self._trim()

    def known(self, key: SessionKey) -> bool:
        return key in self._seen

    def is_dead(self, key: SessionKey) -> bool:
        return key in self._dead

    def expires_at(self, key: SessionKey) -> float | None:
        return self._clocks.expires_at(key)

    def expired(self, key: SessionKey) -> bool:
        return self._clocks.expired(key)

    def judged(self, key: SessionKey) -> tuple[str, str] | None:
        """``(uid, resourceVersion)`` of the version last seen, for a conditional delete."""
        seen = self._seen.get(key)
        return None if seen is None else (seen.uid, seen.resource_version)

    def pod(self, key: SessionKey) -> PodRef | None:
        seen = self._seen.get(key)
        return None if seen is None else seen.pod

    def sessions_of_pod(self, namespace: str, name: str) -> list[SessionKey]:
        return [
            key
            for key, seen in self._seen.items()
            if seen.pod is not None and (seen.pod.namespace, seen.pod.name) == (namespace, name)
        ]

    def keys(self) -> list[SessionKey]:
        return list(self._seen)

    def _trim(self) -> None:
        horizon = self._clock.monotonic() - DEAD_REMEMBERED
        for key in [k for k, at in self._dead.items() if at < horizon]:
            del self._dead[key]

    # -- claims ------------------------------------------------------------------------

    def observe_claim(self, etype: str, claim: SlimClaim) -> bool:
        """Record a claim event; True if the live claims on its target changed."""
        key = (claim.namespace, claim.session)
        if etype == "DELETED":
            claims = self._claims.get(key)
            if claims is not None:
                claims.pop(claim.name, None)
                if not claims:
                    del self._claims[key]
        else:
            self._claims.setdefault(key, {})[claim.name] = claim
        target = claim.target
        names = self._waiting.get(target)
        if etype == "DELETED" or claim.deleting:
            if names is None or claim.name not in names:
                return False
            names.discard(claim.name)
            if not names:
                del self._waiting[target]
            return True
        if names is None:
            names = self._waiting[target] = set()
        elif claim.name in names:
            return False
        names.add(claim.name)
        return True

    def claims_on(self, target: TargetKey) -> AbstractSet[str]:
        """Names of the live (not deleting) claims naming ``target``; granted ones too."""
        return self._waiting.get(target, _NONE)

    def claims_of(self, key: SessionKey) -> list[SlimClaim]:
        return list(self._claims.get(key, {}).values())

    def claim_sessions(self) -> Iterable[SessionKey]:
        return list(self._claims)

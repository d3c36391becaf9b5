"""Who may read ``/metrics``: bearer tokens checked by the API server (``--metrics-auth``).

With ``--metrics-auth=kubernetes`` a scrape must present ``Authorization: Bearer <token>``;
the operator asks the API server who that is (TokenReview) and whether they may ``get``
the non-resource URL ``/metrics`` (SubjectAccessReview) -- the same contract as
kube-rbac-proxy and controller-runtime's secure metrics, so the usual Prometheus RBAC
(ClusterRole ``konductor-metrics-reader``) applies. Answers are cached per token hash
(allowed: :data:`ALLOWED_TTL`, refused: :data:`DENIED_TTL` seconds), so a scrape every 15 s
costs the API server two requests a minute. The probes are never authenticated: the kubelet
presents no token, and they reveal nothing but liveness.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final, final

import attrs

from konductor_sdk._kernel.clock import Clock
from konductor_sdk._kernel.errors import APIError
from konductor_sdk._kernel.objects import SUBJECT_ACCESS_REVIEW, ResourceKind
from konductor_sdk._kernel.store import Store

log = logging.getLogger("konductor_operator.metrics")

TOKEN_REVIEW: Final = ResourceKind(
    "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False
)
ALLOWED_TTL: Final = 60.0
DENIED_TTL: Final = 10.0
_MAX_ENTRIES: Final = 1024


@final
@attrs.frozen
class Decision:
    """An HTTP status for the request (200, 401 or 403) and why."""

    status: int
    reason: str


@final
class MetricsAuthorizer:
    """Decides whether a request's bearer token may read ``path`` (TokenReview + SAR)."""

    def __init__(self, store: Store, clock: Clock, *, path: str = "/metrics") -> None:
        self._store = store
        self._clock = clock
        self.path = path
        self._cache: dict[str, tuple[float, Decision]] = {}
        self.reviews = 0

    def __repr__(self) -> str:
        return f"<MetricsAuthorizer {self.path} cached={len(self._cache)}>"

    async def decide(self, authorization: str | None) -> Decision:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Decision(401, "a bearer token is required")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        decision = await self._review(token)
        if decision.status >= 500:
            return decision  # the API server's trouble is not cached
        ttl = ALLOWED_TTL if decision.status == 200 else DENIED_TTL
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
        self._cache[key] = (now + ttl, decision)
        return decision

    async def _review(self, token: str) -> Decision:
        try:
            self.reviews += 1
            review = await self._store.create(TOKEN_REVIEW, None, {"spec": {"token": token}})
            status = review.status
            if status.get("authenticated") is not True:
                return Decision(401, "the token is not valid")
            user: dict[str, Any] = dict(status.get("user") or {})
            spec: dict[str, Any] = {
                "user": user.get("username", ""),
                "groups": list(user.get("groups") or ()),
                "nonResourceAttributes": {"path": self.path, "verb": "get"},
            }
            if user.get("uid"):
                spec["uid"] = user["uid"]
            if user.get("extra"):
                spec["extra"] = user["extra"]
            self.reviews += 1
            access = await self._store.create(SUBJECT_ACCESS_REVIEW, None, {"spec": spec})
        except APIError as exc:
            log.warning("cannot review a /metrics token: %s", exc)
            return Decision(503, "the API server could not review the token")
        if access.status.get("allowed") is True:
            return Decision(200, "")
        return Decision(403, f"{spec['user']} may not get {self.path}")

"""The data model every layer shares: where kinds live, and read-only views of objects.

No I/O here (and no aiohttp/kubernetes_asyncio): the pure state machines import this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, final
from urllib.parse import quote

import attrs

GROUP = "sync.konductor.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CREATOR_ANNOTATION = f"{GROUP}/creator"
"""Set from the request by the ``konductor-creator`` admission policy on every create."""


@attrs.frozen
class ResourceKind:
    """Where a kind lives on the API server."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path; ``namespace=None`` on a namespaced kind means all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


def konductor_kind(kind: str, plural: str) -> ResourceKind:
    return ResourceKind(GROUP, VERSION, plural, kind)


SEMAPHORE = konductor_kind("Semaphore", "semaphores")
MUTEX = konductor_kind("Mutex", "mutexes")
RWMUTEX = konductor_kind("RWMutex", "rwmutexes")
BARRIER = konductor_kind("Barrier", "barriers")
LEASE = konductor_kind("Lease", "leases")
GATE = konductor_kind("Gate", "gates")
ONCE = konductor_kind("Once", "onces")
WAITGROUP = konductor_kind("WaitGroup", "waitgroups")
SESSION = konductor_kind("Session", "sessions")
CLAIM = konductor_kind("Claim", "claims")

POD = ResourceKind("", "v1", "pods", "Pod")
NAMESPACE = ResourceKind("", "v1", "namespaces", "Namespace", namespaced=False)
EVENT = ResourceKind("", "v1", "events", "Event")
JOB = ResourceKind("batch", "v1", "jobs", "Job")
COORDINATION_LEASE = ResourceKind("coordination.k8s.io", "v1", "leases", "Lease")
SELF_SUBJECT_ACCESS_REVIEW = ResourceKind(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False
)
SELF_SUBJECT_REVIEW = ResourceKind(
    "authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False
)
SUBJECT_ACCESS_REVIEW = ResourceKind(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False
)


@final
@attrs.frozen
class KObject:
    """A read-only view of one object as the server returned it.

    ``raw`` is the decoded JSON; treat it as immutable (copy before changing).
    """

    raw: Mapping[str, Any]

    @property
    def metadata(self) -> Mapping[str, Any]:
        md: Mapping[str, Any] = self.raw.get("metadata") or {}
        return md

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))

    @property
    def labels(self) -> Mapping[str, str]:
        labels: Mapping[str, str] = self.metadata.get("labels") or {}
        return labels

    @property
    def creator(self) -> str:
        """Who created the object, as the API server recorded it ("" if unknown)."""
        annotations: Mapping[str, str] = self.metadata.get("annotations") or {}
        return str(annotations.get(CREATOR_ANNOTATION, ""))

    @property
    def deleting(self) -> bool:
        return self.metadata.get("deletionTimestamp") is not None

    @property
    def spec(self) -> Mapping[str, Any]:
        spec: Mapping[str, Any] = self.raw.get("spec") or {}
        return spec

    @property
    def status(self) -> Mapping[str, Any]:
        status: Mapping[str, Any] = self.raw.get("status") or {}
        return status

    def with_status(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """The body of a status PUT: this object (with its resourceVersion) and a new status."""
        body = dict(self.raw)
        body["status"] = status
        return body


@attrs.frozen
class ObjectList:
    items: tuple[KObject, ...]
    resource_version: str
    continue_: str = ""
    """The token that fetches the next page of a list asked with a ``limit``; empty on
    the last page."""


@attrs.frozen
class WatchEvent:
    """One line of a watch stream. ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: KObject


PatchType = Literal["merge", "json", "strategic"]


def json_pointer(*parts: str) -> str:
    """An RFC 6901 pointer; map keys may contain ``/`` and ``~``."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)

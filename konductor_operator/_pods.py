"""Pod lifecycle, as far as reaping needs it: does the pod an entry names still run?

Pods are watched with the SDK's :class:`~konductor_sdk._kernel.watch.KindWatch` (list once, watch,
resume, re-list on 410), through a store wrapper that keeps only name, UID, phase and
resourceVersion of each pod: a cluster-wide pod cache would otherwise cost hundreds of
megabytes for fields the operator never reads.

A cache can lag. Absence from it, or a different UID under the same name, may just mean the
watch has not delivered the new pod yet, so such verdicts are confirmed with a GET (a quorum
read) before anything is reaped. A DELETED event for a UID, or a terminal phase on the same
UID, is final and needs no confirmation: UIDs are never reused and phases never go back.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, final

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import APIError, NotFoundError
from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import (
    POD,
    KObject,
    ObjectList,
    PatchType,
    ResourceKind,
    WatchEvent,
)
from konductor_sdk._kernel.store import Store
from konductor_sdk._kernel.watch import KindWatch

from ._reaping import POD_DELETED, pod_verdict

log = logging.getLogger("konductor_operator.pods")

PodListener = Callable[[str, KObject], None]

_DELETED_UIDS_KEPT: Final = 65_536
UNKNOWN: Final = "Unknown"
"""Verdict when liveness cannot be judged (pod watch not synced, API error)."""


def slim_pod(obj: KObject) -> KObject:
    """Only what reaping reads: name, namespace, UID, resourceVersion, phase."""
    md = obj.metadata
    metadata = {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in md}
    phase = obj.status.get("phase")
    return KObject({"metadata": metadata, "status": {"phase": phase} if phase else {}})


@final
class SlimStore:
    """A :class:`Store` whose lists and watches carry slimmed objects only (``transform``).

    A cluster-wide cache of full pods (or claims) would cost hundreds of megabytes for
    fields the operator never reads; reads and writes of single objects pass through.
    """

    def __init__(self, inner: Store, transform: Callable[[KObject], KObject]) -> None:
        self._inner = inner
        self._transform = transform
        self.stats: Counter[str] = inner.stats

    def __repr__(self) -> str:
        return f"<SlimStore {self._inner!r}>"

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        return await self._inner.get(kind, namespace, name)

    async def list(
        self,
        kind: ResourceKind,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
    ) -> ObjectList:
        listed = await self._inner.list(
            kind,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            continue_=continue_,
        )
        return attrs.evolve(listed, items=tuple(map(self._transform, listed.items)))

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any]
    ) -> KObject:
        return await self._inner.create(kind, namespace, body)

    async def replace(
        self, kind: ResourceKind, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> KObject:
        return await self._inner.replace(kind, body, subresource=subresource)

    async def patch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> KObject:
        return await self._inner.patch(
            kind, namespace, name, patch, patch_type=patch_type, subresource=subresource
        )

    async def delete(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> None:
        await self._inner.delete(kind, namespace, name, resource_version=resource_version, uid=uid)

    async def delete_collection(
        self,
        kind: ResourceKind,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        await self._inner.delete_collection(
            kind, namespace, label_selector=label_selector, field_selector=field_selector
        )

    async def watch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        async for event in self._inner.watch(
            kind,
            namespace,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            label_selector=label_selector,
            field_selector=field_selector,
        ):
            yield WatchEvent(event.type, self._transform(event.object))


@final
class PodWatcher:
    """Slim pod caches for the operator's namespaces (and, lazily, any other a ref names).

    Args:
        client: the connected client (its store is used; nothing is shared with it).
        namespaces: the operator's scope; ``None`` watches all namespaces with one watch.
        on_change: called with ``(event type, slim pod)`` for every pod change.
        on_synced: called with the namespace (``None``: all) when a pod watch has synced.
    """

    def __init__(
        self,
        client: Client,
        namespaces: tuple[str, ...] | None,
        on_change: PodListener,
        on_synced: Callable[[str | None], None] | None = None,
    ) -> None:
        self._client = client
        self._scope = namespaces
        self._on_change = on_change
        self._on_synced = on_synced
        self._watches: dict[str | None, KindWatch] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._tg: TaskGroup | None = None
        self.confirmations = 0

    def __repr__(self) -> str:
        scope = "*" if self._scope is None else ",".join(self._scope)
        return f"<PodWatcher {scope} watches={len(self._watches)}>"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch the scope's pods until cancelled; ``task_status.started()`` right away."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for ns in self._scope if self._scope is not None else (None,):
                self._start(ns)
            task_status.started()
            await anyio.sleep_forever()

    def _start(self, namespace: str | None) -> None:
        if namespace in self._watches or self._tg is None:
            return
        watch = KindWatch(SlimStore(self._client.store, slim_pod), POD, namespace)
        watch.add_listener(self._listen)
        self._watches[namespace] = watch
        self._tg.start_soon(watch.run)
        self._tg.start_soon(self._announce_sync, watch)

    async def _announce_sync(self, watch: KindWatch) -> None:
        await watch.synced.wait()
        if self._on_synced is not None:
            self._on_synced(watch.namespace)

    def _listen(self, etype: str, pod: KObject) -> None:
        if etype == "DELETED" and pod.uid:
            self._deleted[pod.uid] = None
            self._deleted.move_to_end(pod.uid)
            while len(self._deleted) > _DELETED_UIDS_KEPT:
                self._deleted.popitem(last=False)
        self._on_change(etype, pod)

    def _watch_for(self, namespace: str) -> KindWatch | None:
        if self._scope is None:
            return self._watches.get(None)
        if namespace not in self._watches:
            # A ref to a pod outside the scope: watch that namespace too (best effort;
            # without RBAC for it the watch never syncs and such entries age out by TTL).
            self._start(namespace)
        return self._watches.get(namespace)

    def synced(self, namespace: str) -> bool:
        watch = self._watch_for(namespace)
        return watch is not None and watch.synced.is_set()

    def all_synced(self) -> bool:
        return bool(self._watches) and all(w.synced.is_set() for w in self._watches.values())

    def suspicious(self, ref: PodRef) -> bool:
        """Whether the cache suggests ``ref``'s pod is over (to be confirmed by
        :meth:`verdict`); cheap enough for every watch event."""
        if ref.uid and ref.uid in self._deleted:
            return True
        watch = self._watch_for(ref.namespace)
        if watch is None or not watch.synced.is_set():
            return False
        cached = watch.get(ref.name, ref.namespace)
        return cached is None or pod_verdict(ref, cached) is not None

    async def verdict(self, ref: PodRef) -> str | None:
        """Why ``ref``'s pod is over (a ``Pod*`` reason), ``None`` if it may run, or
        :data:`UNKNOWN` when that cannot be told right now."""
        if ref.uid and ref.uid in self._deleted:
            return POD_DELETED
        watch = self._watch_for(ref.namespace)
        if watch is None or not watch.synced.is_set():
            return UNKNOWN
        cached = watch.get(ref.name, ref.namespace)
        if cached is not None and (not ref.uid or cached.uid == ref.uid):
            return pod_verdict(ref, cached)
        # Absent, or another pod under that name: confirm before believing the cache.
        self.confirmations += 1
        try:
            fresh: KObject | None = await self._client.store.get(POD, ref.namespace, ref.name)
        except NotFoundError:
            fresh = None
        except APIError as exc:
            log.warning("cannot confirm pod %s/%s: %s", ref.namespace, ref.name, exc)
            return UNKNOWN
        return pod_verdict(ref, fresh)

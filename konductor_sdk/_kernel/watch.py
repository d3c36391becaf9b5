"""Shared watches: one watch per (kind, namespace) per client, fanned out to every waiter.

A :class:`KindWatch` is a tiny informer: it lists once, then watches from the list's
resourceVersion, keeps a cache of every object it has seen, resumes from the last
resourceVersion (bookmarks keep that fresh) when the server ends the stream, and re-lists
on 410 Gone. Waiters never talk to the server to wait; they do::

    while True:
        changed = watch.next_change(name)   # take the event BEFORE reading the cache
        obj = watch.get(name)
        if ready(obj):
            break
        await changed.wait()

anyio is cooperative, so nothing can slip in between ``next_change`` and ``get``. A
thousand waiters on one object share one watch connection and one event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import final

import anyio

from konductor_sdk._kernel.errors import APIError, ForbiddenError
from konductor_sdk._kernel.objects import KObject, ResourceKind
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.store import Store, WatchExpired

log = logging.getLogger("konductor_sdk.watch")

Listener = Callable[[str, KObject], None]


@final
class KindWatch:
    """The cache and change notifications of one kind in one namespace (or all: ``None``)."""

    def __init__(
        self,
        store: Store,
        kind: ResourceKind,
        namespace: str | None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.field_selector = field_selector
        self.label_selector = label_selector
        self._store = store
        self._cache: dict[tuple[str, str], KObject] = {}
        self._events: dict[tuple[str, str], anyio.Event] = {}
        self._any_change = anyio.Event()
        self._listeners: list[Listener] = []
        self.synced = anyio.Event()
        self.resource_version = ""
        self.relists = 0
        self.last_error: BaseException | None = None
        self.attachments: dict[str, object] = {}
        """Derived views kept by users of this watch (e.g. a claim queue), by name."""

    def __repr__(self) -> str:
        ns = self.namespace if self.namespace is not None else "*"
        selected = "".join(
            f" {s}" for s in (self.field_selector, self.label_selector) if s is not None
        )
        return f"<KindWatch {self.kind.plural} {ns}{selected} objects={len(self._cache)}>"

    def _key(self, name: str, namespace: str | None) -> tuple[str, str]:
        return (namespace if namespace is not None else (self.namespace or ""), name)

    def get(self, name: str, namespace: str | None = None) -> KObject | None:
        """The newest version seen of ``name``; ``None`` if absent (or not synced yet)."""
        return self._cache.get(self._key(name, namespace))

    def objects(self) -> list[KObject]:
        return list(self._cache.values())

    def next_change(self, name: str, namespace: str | None = None) -> anyio.Event:
        """An event set on the next change to ``name`` (including its deletion)."""
        key = self._key(name, namespace)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = anyio.Event()
        return event

    def next_any_change(self) -> anyio.Event:
        """An event set on the next change to any object of this watch."""
        return self._any_change

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event_type, obj)`` on every change; returns the remover.

        Listeners run inside the watch task and must not block.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _apply(self, etype: str, obj: KObject) -> None:
        key = (obj.namespace, obj.name)
        old = self._cache.get(key)
        if old is not None and rv_int(old.resource_version) > rv_int(obj.resource_version):
            return  # a CAS result fed in by observe() was newer than this event
        if etype == "DELETED":
            self._cache.pop(key, None)
        else:
            self._cache[key] = obj
        event = self._events.pop(key, None)
        if event is not None:
            event.set()
        self._any_change.set()
        self._any_change = anyio.Event()
        for listener in list(self._listeners):
            try:
                listener(etype, obj)
            except Exception:  # a broken listener must not kill the shared watch
                log.exception("watch listener failed on %s %s", etype, key)

    def observe(self, obj: KObject) -> None:
        """Feed in an object this process just wrote, so waiters see it without a round trip."""
        if self.synced.is_set():
            self._apply("MODIFIED", obj)

    async def _relist(self) -> None:
        listed = await self._store.list(
            self.kind,
            self.namespace,
            field_selector=self.field_selector,
            label_selector=self.label_selector,
        )
        seen = set()
        for obj in listed.items:
            seen.add((obj.namespace, obj.name))
            old = self._cache.get((obj.namespace, obj.name))
            if old is None or old.resource_version != obj.resource_version:
                self._apply("ADDED" if old is None else "MODIFIED", obj)
        for key in [k for k in self._cache if k not in seen]:
            self._apply("DELETED", self._cache[key])
        self.resource_version = listed.resource_version
        self.relists += 1
        self.synced.set()

    async def run(self) -> None:
        """List, then watch forever; meant to run in a background task."""
        attempt = 0
        while True:
            try:
                if not self.resource_version:
                    await self._relist()
                async for event in self._store.watch(
                    self.kind,
                    self.namespace,
                    resource_version=self.resource_version,
                    field_selector=self.field_selector,
                    label_selector=self.label_selector,
                ):
                    attempt = 0
                    self.resource_version = event.object.resource_version
                    if event.type != "BOOKMARK":
                        self._apply(event.type, event.object)
            except WatchExpired:
                self.resource_version = ""
            except ForbiddenError as exc:
                # Nothing will change that by retrying fast; keep trying slowly.
                self.last_error = exc
                log.warning("watch %r forbidden: %s", self, exc)
                await anyio.sleep(5.0)
            except APIError as exc:
                self.last_error = exc
                attempt += 1
                log.debug("watch %r interrupted: %s", self, exc)
                await anyio.sleep(backoff(min(attempt, 6), base=0.1, cap=5.0))


def rv_int(rv: str) -> int:
    # resourceVersions are opaque by contract, but etcd3-backed servers use integers and
    # ordering them is what lets a write result and a watch event be reconciled; a
    # non-integer rv is treated as "unknown" and never blocks an update.
    try:
        return int(rv)
    except ValueError:
        return -1

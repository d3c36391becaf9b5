"""An in-memory :class:`konductor_sdk._kernel.store.Store` for the operator's unit tests.

It keeps the semantics the operator relies on: a global resourceVersion, status-subresource
PUTs rejected with 409 on a stale resourceVersion, JSON patches with ``test`` ops (422 when
a test fails), 404s, and list+watch streams from a resourceVersion. ``before_write`` lets a
test slip a concurrent write in right before the operator's write lands.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel

from konductor_sdk._kernel.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidObjectError,
    NotFoundError,
)
from konductor_sdk._kernel.objects import KObject, ObjectList, PatchType, ResourceKind, WatchEvent

Key = tuple[str, str, str]


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.log: list[tuple[int, str, str, dict[str, Any]]] = []  # rv, type, plural, obj
        self.stats: Counter[str] = Counter()
        self._rv = itertools.count(100)
        self._changed = anyio.Event()
        self.before_write: Callable[[str, Key], None] | None = None
        self.writes: list[tuple[str, Key]] = []
        self._pages: dict[str, tuple[tuple[KObject, ...], str]] = {}

    # -- helpers for tests ----------------------------------------------------------------

    def put(self, kind: ResourceKind, obj: Mapping[str, Any]) -> KObject:
        """Create or overwrite an object as-is (a test's "someone else wrote this")."""
        raw = copy.deepcopy(dict(obj))
        md = raw.setdefault("metadata", {})
        key = (kind.plural, md.get("namespace", ""), md["name"])
        old = self.objects.get(key)
        md.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
        raw.setdefault("apiVersion", kind.api_version)
        raw.setdefault("kind", kind.kind)
        return self._store(kind, key, raw, "MODIFIED" if old else "ADDED")

    def raw(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(kind.plural, namespace, name)])

    def remove(self, kind: ResourceKind, namespace: str, name: str) -> None:
        key = (kind.plural, namespace, name)
        raw = self.objects.pop(key)
        raw = copy.deepcopy(raw)
        raw["metadata"]["resourceVersion"] = str(next(self._rv))
        self._emit("DELETED", kind.plural, raw)

    def _store(self, kind: ResourceKind, key: Key, raw: dict[str, Any], etype: str) -> KObject:
        raw["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = raw
        self._emit(etype, kind.plural, raw)
        return KObject(copy.deepcopy(raw))

    def _emit(self, etype: str, plural: str, raw: dict[str, Any]) -> None:
        self.log.append(
            (int(raw["metadata"]["resourceVersion"]), etype, plural, copy.deepcopy(raw))
        )
        self._changed.set()
        self._changed = anyio.Event()

    def _key(self, kind: ResourceKind, namespace: str | None, name: str) -> Key:
        return (kind.plural, namespace or "", name)

    def _get(self, key: Key) -> dict[str, Any]:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFoundError(f"{key} not found", status=404) from None

    def _hook(self, verb: str, key: Key) -> None:
        self.writes.append((verb, key))
        if self.before_write is not None:
            self.before_write(verb, key)

    # -- the Store protocol -----------------------------------------------------------------

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        self.stats["get"] += 1
        await anyio.lowlevel.checkpoint()
        return KObject(copy.deepcopy(self._get(self._key(kind, namespace, name))))

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
        self.stats["list"] += 1
        if continue_:
            # The server's pages are one snapshot: the rest of it was kept with the token.
            items, rv = self._pages.pop(continue_)
        else:
            items = tuple(
                KObject(copy.deepcopy(raw))
                for (plural, ns, _), raw in sorted(self.objects.items())
                if plural == kind.plural and (namespace is None or ns == namespace)
            )
            rv = str(self.log[-1][0]) if self.log else "1"
        token = ""
        if limit and len(items) > limit:
            token = f"page-{next(self._rv)}"
            self._pages[token] = (items[limit:], rv)
            items = items[:limit]
        return ObjectList(items, rv, continue_=token)

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any]
    ) -> KObject:
        self.stats["post"] += 1
        raw = copy.deepcopy(dict(body))
        md = raw.setdefault("metadata", {})
        md["namespace"] = namespace or ""
        key = self._key(kind, namespace, md["name"])
        self._hook("create", key)
        if key in self.objects:
            raise AlreadyExistsError(f"{key} exists", status=409, reason="AlreadyExists")
        md["uid"] = str(uuid.uuid4())
        raw.setdefault("apiVersion", kind.api_version)
        raw.setdefault("kind", kind.kind)
        return self._store(kind, key, raw, "ADDED")

    async def replace(
        self, kind: ResourceKind, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> KObject:
        self.stats["put"] += 1
        md = body["metadata"]
        key = self._key(kind, md.get("namespace"), md["name"])
        self._hook("replace", key)
        await anyio.lowlevel.checkpoint()
        current = self._get(key)
        if md.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            self.stats["conflict"] += 1
            raise ConflictError(f"{key}: stale resourceVersion", status=409, reason="Conflict")
        new = copy.deepcopy(current)
        if subresource == "status":
            new["status"] = copy.deepcopy(dict(body.get("status") or {}))
        else:
            new["spec"] = copy.deepcopy(dict(body.get("spec") or {}))
        return self._store(kind, key, new, "MODIFIED")

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
        self.stats["patch"] += 1
        key = self._key(kind, namespace, name)
        self._hook("patch", key)
        new = copy.deepcopy(self._get(key))
        if patch_type == "json":
            for op in patch:
                _json_op(new, op)
        else:
            _merge(new, patch)
        return self._store(kind, key, new, "MODIFIED")

    async def delete(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> None:
        self.stats["delete"] += 1
        self._get(self._key(kind, namespace, name))
        self.remove(kind, namespace or "", name)

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
        self.stats["watch_opened"] += 1
        after = int(resource_version or 0)
        while True:
            changed = self._changed
            for rv, etype, plural, raw in list(self.log):
                if rv <= after or plural != kind.plural:
                    continue
                after = rv
                if namespace is None or raw["metadata"].get("namespace") == namespace:
                    yield WatchEvent(etype, KObject(copy.deepcopy(raw)))
            await changed.wait()


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _json_op(doc: dict[str, Any], op: Mapping[str, Any]) -> None:
    parts = [_unescape(p) for p in op["path"].split("/")[1:]]
    parent: Any = doc
    for part in parts[:-1]:
        if not isinstance(parent, dict) or part not in parent:
            raise InvalidObjectError(f"path {op['path']} missing", status=422)
        parent = parent[part]
    last = parts[-1]
    if op["op"] == "test":
        if not isinstance(parent, dict) or parent.get(last, object()) != op["value"]:
            raise InvalidObjectError(f"test failed at {op['path']}", status=422)
    elif op["op"] in ("replace", "add"):
        if op["op"] == "replace" and last not in parent:
            raise InvalidObjectError(f"path {op['path']} missing", status=422)
        parent[last] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        if last not in parent:
            raise InvalidObjectError(f"path {op['path']} missing", status=422)
        del parent[last]
    else:
        raise InvalidObjectError(f"unsupported op {op['op']}", status=422)


def _merge(doc: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            doc.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(doc.get(key), dict):
            _merge(doc[key], value)
        else:
            doc[key] = copy.deepcopy(value)

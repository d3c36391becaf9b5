"""The one seam between Konductor and the API server.

Only this module (and :mod:`konductor_sdk._kernel.client`, which builds the ApiClient) imports
``kubernetes_asyncio``. Primitives speak to :class:`Store` with plain dicts and get
:class:`KObject` views back; every HTTP error is translated into the error tree of
:mod:`konductor_sdk._kernel.errors` with the original exception as ``__cause__``.

Requests go through ``ApiClient.call_api`` with ``_preload_content=False``: that works for
every group (core ``/api/v1`` and ``/apis/...`` alike), lets us choose the patch content
type, and lets watches stream line by line without the generated models in the way.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, final, runtime_checkable
from urllib.parse import quote

import anyio

from konductor_sdk._kernel.errors import (
    AlreadyExistsError,
    APIError,
    ConflictError,
    ForbiddenError,
    InvalidObjectError,
    NotFoundError,
)
from konductor_sdk._kernel.objects import KObject, ObjectList, PatchType, ResourceKind, WatchEvent
from konductor_sdk._kernel.retry import backoff

if TYPE_CHECKING:
    # Imported at run time only once a client connects: ``import konductor_sdk`` (and
    # ``koncli --help``) must not pay for the HTTP stack.
    import aiohttp
    from kubernetes_asyncio.client import ApiClient

# How long a connection attempt may take before it counts as a failure (a black-holed
# server must not stall a request for the whole request timeout).
CONNECT_TIMEOUT = 10.0

FieldValidation = Literal["Ignore", "Warn", "Strict"]


class WatchExpired(APIError):
    """The watch's resourceVersion is too old (HTTP 410 Gone); re-list and start again."""


_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class Store(Protocol):
    """What primitives need from the API server. :class:`KubeStore` is the real one."""

    stats: Counter[str]

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject: ...

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
        """Objects of ``kind``; with ``limit``, one page of at most that many, and
        :attr:`ObjectList.continue_` fetches the next (all pages are one snapshot).

        Raises:
            WatchExpired: ``continue_`` is too old (the snapshot was compacted): list anew.
        """
        ...

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any]
    ) -> KObject: ...

    async def replace(
        self, kind: ResourceKind, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> KObject: ...

    async def patch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> KObject: ...

    async def delete(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> None: ...

    async def delete_collection(
        self,
        kind: ResourceKind,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None: ...

    def watch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]: ...


@runtime_checkable
class Discovery(Protocol):
    """Optional store capability: the API server's discovery documents (kind -> plural).

    Only needed to reach objects named by apiVersion/kind (the Gate's ``object``
    conditions); :class:`KubeStore` has it, test fakes need not.
    """

    async def discover(self, group: str, version: str) -> list[dict[str, Any]]: ...


# Reads are retried on these; writes never are (the caller owns that decision).
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@final
class KubeStore:
    """:class:`Store` over a ``kubernetes_asyncio`` ApiClient.

    Attributes:
        stats: request counters by verb, plus ``watch_opened``, ``conflict``,
            ``watch_event``, ``watch_bytes`` (received on watch streams). Tests and
            benchmarks assert on them.
    """

    def __init__(self, api_client: ApiClient, *, read_retries: int = 5) -> None:
        self._api = api_client
        self._read_retries = read_retries
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<KubeStore {self._api.configuration.host}>"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109 - aiohttp's own timeout
    ) -> aiohttp.ClientResponse:
        import aiohttp

        self.stats[method.lower()] += 1
        try:
            resp: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout
                or aiohttp.ClientTimeout(total=60, sock_connect=CONNECT_TIMEOUT),
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise APIError(f"{method} {path}: {self._no_answer(exc)}", status=0) from exc
        return resp

    def _no_answer(self, exc: BaseException) -> str:
        """Why a request got no answer, in words (aiohttp's reprs show internals)."""
        import aiohttp

        host = self._api.configuration.host
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
            return f"cannot connect to the API server {host}: {reason}"
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return f"no answer from the API server {host} in time"
        text = str(exc).strip()
        return f"connection to the API server {host} failed: {text or type(exc).__name__}"

    async def _json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        warnings: MutableSequence[str] | None = None,
    ) -> dict[str, Any]:
        import aiohttp

        attempts = self._read_retries if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                resp = await self._request(
                    method, path, query=query, body=body, content_type=content_type
                )
                async with resp:
                    try:
                        data = await resp.read()
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        # A body cut short (a large LIST, the server restarting): no
                        # answer, like a refused connection, so a GET is retried.
                        raise APIError(
                            f"{method} {path}: {self._no_answer(exc)}", status=0
                        ) from exc
                    status = resp.status
                    if warnings is not None:
                        warnings += _warnings(resp.headers.getall("Warning", []))
            except APIError:
                if attempt == attempts:
                    raise
                await anyio.sleep(backoff(attempt))
                continue
            if 200 <= status < 300:
                decoded: dict[str, Any] = json.loads(data) if data else {}
                _slim(decoded)
                for item in decoded.get("items") or ():
                    _slim(item)
                return decoded
            if status in _RETRYABLE_STATUS and attempt < attempts:
                await anyio.sleep(backoff(attempt))
                continue
            raise self._error(method, path, status, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, method: str, path: str, status: int, data: bytes) -> APIError:
        try:
            body: dict[str, Any] = json.loads(data) if data else {}
        except ValueError:
            body = {"message": data.decode("utf-8", "replace")}
        reason = str(body.get("reason", ""))
        message = f"{method} {path}: {status} {reason}: {body.get('message', '')}".rstrip(": ")
        cls: type[APIError] = APIError
        if status == 404:
            cls = NotFoundError
        elif status == 409 and reason == "AlreadyExists":
            cls = AlreadyExistsError
        elif status == 409:
            cls = ConflictError
            self.stats["conflict"] += 1
        elif status == 422:
            cls = InvalidObjectError
        elif status == 403:
            cls = ForbiddenError
        elif status == 410:
            cls = WatchExpired
        return cls(message, status=status, reason=reason, body=body)

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        return KObject(await self._json("GET", kind.path(namespace, name)))

    async def discover(self, group: str, version: str) -> list[dict[str, Any]]:
        """The ``resources`` of ``/apis/<group>/<version>`` (``/api/v1`` for the core group).

        Raises:
            NotFoundError: the group/version is not served.
        """
        path = (
            f"/apis/{quote(group, safe='')}/{quote(version, safe='')}"
            if group
            else (f"/api/{quote(version, safe='')}")
        )
        data = await self._json("GET", path)
        return [dict(r) for r in data.get("resources") or () if isinstance(r, Mapping)]

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
        query = _selectors(label_selector, field_selector)
        if limit:
            query.append(("limit", str(limit)))
        if continue_:
            query.append(("continue", continue_))
        data = await self._json("GET", kind.path(namespace), query=query)
        items = []
        for item in data.get("items") or []:
            # List items come without apiVersion/kind; put them back so bodies round-trip.
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
            items.append(KObject(item))
        metadata = data.get("metadata") or {}
        rv = str(metadata.get("resourceVersion", ""))
        return ObjectList(tuple(items), rv, continue_=str(metadata.get("continue") or ""))

    async def create(
        self,
        kind: ResourceKind,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        field_validation: FieldValidation | None = None,
        warnings: MutableSequence[str] | None = None,
    ) -> KObject:
        """POST ``body``. (The keyword arguments are this store's own, beyond :class:`Store`.)

        Args:
            dry_run: ``dryRun=All``: validate and admit (schema, CEL rules, admission
                policies, RBAC, name clash) without storing anything.
            field_validation: ``fieldValidation``: ``Strict`` refuses unknown or duplicate
                fields (422), ``Warn`` reports them as warnings, ``Ignore`` drops them.
            warnings: if given, the server's ``Warning`` headers are appended to it.
        """
        full = {"apiVersion": kind.api_version, "kind": kind.kind, **body}
        query = []
        if dry_run:
            query.append(("dryRun", "All"))
        if field_validation is not None:
            query.append(("fieldValidation", field_validation))
        data = await self._json(
            "POST", kind.path(namespace), query=query, body=full, warnings=warnings
        )
        return KObject(data)

    async def replace(
        self, kind: ResourceKind, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> KObject:
        md = body.get("metadata") or {}
        path = kind.path(md.get("namespace"), md["name"], subresource)
        return KObject(await self._json("PUT", path, body=dict(body)))

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
        path = kind.path(namespace, name, subresource)
        ctype = _PATCH_CONTENT_TYPES[patch_type]
        return KObject(await self._json("PATCH", path, body=patch, content_type=ctype))

    async def delete(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> None:
        preconditions: dict[str, str] = {}
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        if uid:
            preconditions["uid"] = uid
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if preconditions:
            body["preconditions"] = preconditions
        await self._json("DELETE", kind.path(namespace, name), body=body)

    async def delete_collection(
        self,
        kind: ResourceKind,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        """Delete every object of ``kind`` in ``namespace`` matching the selectors (one
        request; the server runs admission for each object)."""
        if not (label_selector or field_selector):
            raise ValueError("delete_collection needs a selector")
        query = _selectors(label_selector, field_selector)
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        await self._json("DELETE", kind.path(namespace), query=query, body=body)

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
        """Stream events after ``resource_version`` until the server ends the watch.

        Raises:
            WatchExpired: the resourceVersion is too old; re-list.
            APIError: the connection failed or the server refused.
        """
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
            *_selectors(label_selector, field_selector),
        ]
        self.stats["watch_opened"] += 1
        path = kind.path(namespace)
        import aiohttp

        # No total timeout: the server closes the stream after timeoutSeconds; the read
        # timeout catches a dead connection (bookmarks arrive about once a minute).
        timeout = aiohttp.ClientTimeout(
            total=None, sock_read=timeout_seconds + 30, sock_connect=CONNECT_TIMEOUT
        )
        resp = await self._request("GET", path, query=query, timeout=timeout)
        async with resp:
            if resp.status != 200:
                raise self._error("WATCH", path, resp.status, await resp.read())
            try:
                while True:
                    try:
                        line = await resp.content.readline()
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        raise APIError(f"WATCH {path}: {self._no_answer(exc)}") from exc
                    if not line:
                        return
                    self.stats["watch_bytes"] += len(line)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        code = int(obj.get("code", 0))
                        raise self._error("WATCH", path, code, line)
                    obj.setdefault("apiVersion", kind.api_version)
                    obj.setdefault("kind", kind.kind)
                    _slim(obj)
                    self.stats["watch_event"] += 1
                    yield WatchEvent(str(event.get("type")), KObject(obj))
            except BaseException:
                # A stream left mid-way (cancelled, consumer gone, error) cannot be reused.
                # Abort its connection now: the graceful TLS shutdown that releasing it
                # would start needs the server's answer, is awaited by nobody, and may
                # outlive the event loop (an unclosed socket, a ResourceWarning).
                conn = resp.connection
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()
                raise


def _slim(obj: dict[str, Any]) -> None:
    # managedFields are the server-side-apply bookkeeping: often larger than the object's
    # own fields, needed by nobody here, and kept in every watch cache otherwise.
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


_WARNING = re.compile(r'^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')


def _warnings(headers: Sequence[str]) -> list[str]:
    """The texts of RFC 7234 ``Warning`` headers (``299 - "text"``), as kubectl shows them."""
    out = []
    for header in headers:
        match = _WARNING.match(header)
        text = match.group(1) if match else header
        out.append(re.sub(r"\\(.)", r"\1", text))
    return out

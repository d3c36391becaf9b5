"""Shared watches: one watch per (kind, namespace) per client, fanned out to every waiter.

A :class:`KindWatch` is a tiny informer: it lists once (in pages of :data:`PAGE_SIZE`
objects, one snapshot), then watches from the list's resourceVersion, keeps a cache of
every object it has seen, resumes from the last resourceVersion (bookmarks keep that
fresh) when the server ends the stream, and re-lists on 410 Gone. Waiters never talk to
the server to wait; they do::

    while True:
        changed = watch.next_change(name)   # take the event BEFORE reading the cache
        obj = watch.get(name)
        if ready(obj):
            break
        await changed.wait()

anyio is cooperative, so nothing can slip in between ``next_change`` and ``get``. A
thousand waiters on one object share one watch connection and one event.

A watch that cannot go on *fails* instead of retrying forever: at once on 403 (the caller
may not list or watch), or once the API server has been unreachable (connection errors,
timeouts, 5xx) for longer than ``retry_budget`` seconds. Then :attr:`KindWatch.failed`
holds the error, every waiter is woken, and :meth:`~KindWatch.next_change`,
:meth:`~KindWatch.next_any_change` and :meth:`~KindWatch.wait_synced` raise it, so no
wait hangs on a server it cannot reach. The client starts a new watch for later callers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Protocol, final

import anyio

from konductor_sdk._kernel.errors import APIError, ForbiddenError, UnreachableError
from konductor_sdk._kernel.objects import KObject, ResourceKind
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.store import Store, WatchExpired

log = logging.getLogger("konductor_sdk.watch")

Listener = Callable[[str, KObject], None]


class Versions(Protocol):
    """The records a listener keeps of a watch's objects, as the watch needs them: the
    resourceVersion of each (to drop stale events and see what a re-list changed), and
    which there are (to tell the listener of those deleted while the watch was away).
    The listener must record every object delivered (or ``version`` answers ``None``
    and the next re-list delivers it again) and forget it on ``DELETED``."""

    def version(self, namespace: str, name: str) -> str | None: ...

    def keys(self) -> Iterable[tuple[str, str]]:
        """``(namespace, name)`` of every object recorded (other namespaces' too: the
        watch looks at its own)."""
        ...


PAGE_SIZE = 500
"""Objects per page of a list (``limit``); 0 lists everything in one response."""

# The least time one list may take before it counts as a failure, whatever is left of the
# retry budget (a big namespace on a healthy server must still be listable with budget 0).
LIST_FLOOR = 10.0


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
        retry_budget: float = math.inf,
        versions: Versions | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.field_selector = field_selector
        self.label_selector = label_selector
        self._store = store
        self._cache: dict[tuple[str, str], KObject] = {}
        self._versions = versions
        """If given, the watch keeps no objects: its listener keeps a record of each and
        tells their versions (100,000 sessions need not be kept twice); :meth:`get` then
        answers ``None``."""
        self._events: dict[tuple[str, str], anyio.Event] = {}
        self._any_change = anyio.Event()
        self._listeners: list[Listener] = []
        self._failure_listeners: list[Callable[[APIError], None]] = []
        self.synced = anyio.Event()
        self.resource_version = ""
        self.relists = 0
        self.last_error: BaseException | None = None
        self.attachments: dict[str, object] = {}
        """Derived views kept by users of this watch (e.g. a claim queue), by name."""
        self.retry_budget = retry_budget
        self.list_floor = LIST_FLOOR
        self.page_size = PAGE_SIZE
        self.failed: APIError | None = None
        self._failed_event = anyio.Event()

    def __repr__(self) -> str:
        ns = self.namespace if self.namespace is not None else "*"
        selected = "".join(
            f" {s}" for s in (self.field_selector, self.label_selector) if s is not None
        )
        return f"<KindWatch {self.kind.plural} {ns}{selected} objects={self._count()}>"

    def _count(self) -> int:
        return len(self._cache) if self._versions is None else len(self._recorded())

    def _recorded(self) -> list[tuple[str, str]]:
        """What the listener recorded of this watch's objects (``versions``)."""
        assert self._versions is not None
        ns, recorded = self.namespace, self._versions.keys()
        return [k for k in recorded if ns is None or k[0] == ns]

    def _version(self, key: tuple[str, str]) -> str | None:
        if self._versions is not None:
            return self._versions.version(*key)
        old = self._cache.get(key)
        return None if old is None else old.resource_version

    def _key(self, name: str, namespace: str | None) -> tuple[str, str]:
        return (namespace if namespace is not None else (self.namespace or ""), name)

    def get(self, name: str, namespace: str | None = None) -> KObject | None:
        """The newest version seen of ``name``; ``None`` if absent (or not synced yet, or
        the watch keeps no objects)."""
        return self._cache.get(self._key(name, namespace))

    def version(self, name: str, namespace: str | None = None) -> str | None:
        """The newest resourceVersion seen of ``name`` (also when the watch keeps no
        objects: ``versions``); ``None`` if absent."""
        return self._version(self._key(name, namespace))

    def objects(self) -> list[KObject]:
        """Every object cached (none if the listener keeps them: ``versions``)."""
        return list(self._cache.values())

    def next_change(self, name: str, namespace: str | None = None) -> anyio.Event:
        """An event set on the next change to ``name`` (including its deletion).

        Raises:
            APIError: the watch failed (:attr:`failed`): no change will ever come.
        """
        self.raise_if_failed()
        key = self._key(name, namespace)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = anyio.Event()
        return event

    def next_any_change(self) -> anyio.Event:
        """An event set on the next change to any object of this watch.

        Raises:
            APIError: the watch failed (:attr:`failed`).
        """
        self.raise_if_failed()
        return self._any_change

    # --- failure: the watch gave up (403, or unreachable for the whole retry budget) ------

    def raise_if_failed(self) -> None:
        """Raise (a copy of) :attr:`failed`, the original as its cause, if the watch failed."""
        exc = self.failed
        if exc is not None:
            copy = (
                UnreachableError(str(exc), budget=exc.budget, status=exc.status, body=exc.body)
                if isinstance(exc, UnreachableError)
                else type(exc)(str(exc), status=exc.status, reason=exc.reason, body=exc.body)
            )
            raise copy from exc

    async def wait_synced(self) -> None:
        """Wait until the first list arrived.

        Raises:
            APIError: the watch failed before (or after) that.
        """
        if not self.synced.is_set():
            async with anyio.create_task_group() as tg:

                async def one(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(one, self.synced)
                tg.start_soon(one, self._failed_event)
        self.raise_if_failed()

    def _fail(self, exc: APIError) -> None:
        self.failed = self.last_error = exc
        log.debug("watch %r failed: %s", self, exc)  # raised to every waiter: no warning
        self._failed_event.set()
        # Wake every waiter: its next call to next_change() raises the failure.
        for event in self._events.values():
            event.set()
        self._events.clear()
        self._any_change.set()
        for listener in list(self._failure_listeners):
            try:
                listener(exc)
            except Exception:  # one broken listener must not keep the others uninformed
                log.exception("watch failure listener failed")

    def add_failure_listener(self, listener: Callable[[APIError], None]) -> Callable[[], None]:
        """Call ``listener(error)`` once if the watch fails (:attr:`failed`); returns the
        remover. For those who follow objects through listeners rather than events: a
        failed watch delivers no more changes, so what they judge from it is stale."""
        self._failure_listeners.append(listener)
        return lambda: self._failure_listeners.remove(listener)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event_type, obj)`` on every change; returns the remover.

        Listeners run inside the watch task and must not block.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _apply(self, etype: str, obj: KObject) -> None:
        key = (obj.namespace, obj.name)
        old = self._version(key)
        if old is not None and rv_int(old) > rv_int(obj.resource_version):
            return  # a CAS result fed in by observe() was newer than this event
        if self._versions is None:  # else the listener records it
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
        # Page by page: one response of 100,000 objects costs several times their cached
        # size while it is decoded. Each page is applied as it comes; the pages are one
        # snapshot, so the cache passes only through versions that existed. An expired
        # continue token (WatchExpired) goes up to run(), which lists anew.
        seen = set()
        token: str | None = None
        while True:
            listed = await self._store.list(
                self.kind,
                self.namespace,
                field_selector=self.field_selector,
                label_selector=self.label_selector,
                limit=self.page_size or None,
                continue_=token,
            )
            for obj in listed.items:
                seen.add((obj.namespace, obj.name))
                old = self._version((obj.namespace, obj.name))
                if old != obj.resource_version:
                    self._apply("ADDED" if old is None else "MODIFIED", obj)
            if not listed.continue_:
                break
            token = listed.continue_
        if self._versions is None:
            for key in [k for k in self._cache if k not in seen]:
                self._apply("DELETED", self._cache[key])
        else:
            for namespace, name in [k for k in self._recorded() if k not in seen]:
                # All a listener of such a watch gets of an object deleted while the
                # watch was away: which one, and its last version.
                rv = self._versions.version(namespace, name) or ""
                md = {"name": name, "namespace": namespace, "resourceVersion": rv}
                self._apply("DELETED", KObject({"metadata": md}))
        self.resource_version = listed.resource_version
        self.relists += 1
        self.synced.set()

    async def run(self) -> None:
        """List, then watch until cancelled or :attr:`failed`; meant for a background task.

        The retry budget counts from the first failure of an unbroken run of failures (a
        list that hangs, from the moment it was sent); any success ends the run.
        """
        attempt = 0
        failing_since: float | None = None
        while True:
            listing_since: float | None = None
            try:
                if not self.resource_version:
                    listing_since = anyio.current_time()
                    # A list that hangs (a black-holed server) counts against the budget too;
                    # it gets at least `list_floor` seconds, however little budget is left.
                    spent = listing_since - failing_since if failing_since is not None else 0.0
                    limit = max(self.retry_budget - spent, self.list_floor)
                    with anyio.fail_after(None if math.isinf(limit) else limit):
                        await self._relist()
                    failing_since = None
                async for event in self._store.watch(
                    self.kind,
                    self.namespace,
                    resource_version=self.resource_version,
                    field_selector=self.field_selector,
                    label_selector=self.label_selector,
                ):
                    attempt = 0
                    failing_since = None
                    # (A store that slims objects may drop it: then the last one known
                    # stands, or the stream's end would mean listing everything again.)
                    self.resource_version = event.object.resource_version or self.resource_version
                    if event.type != "BOOKMARK":
                        self._apply(event.type, event.object)
                failing_since = None  # the server ended the stream: it is there
            except WatchExpired:
                self.resource_version = ""
            except (APIError, TimeoutError) as exc:
                if isinstance(exc, APIError) and (
                    isinstance(exc, ForbiddenError) or exc.status == 401
                ):
                    # Retrying cannot help until someone changes RBAC or the credentials:
                    # tell the waiters now.
                    self._fail(exc)
                    return
                earlier, self.last_error = self.last_error, exc
                now = anyio.current_time()
                if failing_since is None:
                    failing_since = now
                    if isinstance(exc, TimeoutError) and listing_since is not None:
                        failing_since = listing_since  # the list hung since it was sent
                down = now - failing_since
                if down >= self.retry_budget:
                    if isinstance(exc, APIError) and not _transport_status(exc.status):
                        self._fail(exc)
                    else:
                        self._fail(_unreachable(self, exc, earlier, down))
                    return
                attempt += 1
                log.debug("watch %r interrupted: %s", self, exc)
                await anyio.sleep(backoff(min(attempt, 6), base=0.1, cap=5.0))


def _transport_status(status: int) -> bool:
    """No answer (0), throttled (429) or a server-side failure (5xx)."""
    return status in (0, 429) or status >= 500


def _unreachable(
    watch: KindWatch, exc: BaseException, earlier: BaseException | None, down: float
) -> UnreachableError:
    what = f"{watch.kind.plural} in {watch.namespace}" if watch.namespace else watch.kind.plural
    detail = str(exc)
    if not detail:  # our own deadline on a list: say what the attempts before it got
        detail = f"{earlier}; then no answer in time" if earlier is not None else "timed out"
    error = UnreachableError(
        f"cannot list/watch {what}: no answer from the API server for {down:.0f}s "
        f"(retry budget {watch.retry_budget:g}s): {detail}",
        budget=watch.retry_budget,
        status=exc.status if isinstance(exc, APIError) else 0,
    )
    error.__cause__ = exc
    return error


def rv_int(rv: str) -> int:
    # resourceVersions are opaque by contract, but etcd3-backed servers use integers and
    # ordering them is what lets a write result and a watch event be reconciled; a
    # non-integer rv is treated as "unknown" and never blocks an update.
    try:
        return int(rv)
    except ValueError:
        return -1

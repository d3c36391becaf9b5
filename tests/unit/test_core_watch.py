"""KindWatch against a scripted store: list, watch, resume, re-list on 410, fan-out."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from konductor_sdk._kernel.errors import APIError
from konductor_sdk._kernel.objects import SEMAPHORE, KObject, ObjectList, WatchEvent
from konductor_sdk._kernel.store import WatchExpired
from konductor_sdk._kernel.watch import KindWatch

pytestmark = pytest.mark.anyio


def obj(name: str, rv: int, **status: Any) -> KObject:
    return KObject(
        {
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)},
            "status": status,
        }
    )


class ScriptedStore:
    """Each watch() call plays the next script: a list of events, then an optional error."""

    def __init__(
        self, listing: list[KObject], scripts: list[tuple[list[WatchEvent], Exception | None]]
    ):
        self.listing = listing
        self.list_rv = "10"
        self.scripts = scripts
        self.stats: Counter[str] = Counter()
        self.watch_from: list[str] = []
        self.done = anyio.Event()
        self.relistings: list[tuple[list[KObject], str]] = []

    async def list(self, kind: Any, namespace: Any, **_: Any) -> ObjectList:
        self.stats["list"] += 1
        if self.relistings and self.stats["list"] > 1:
            self.listing, self.list_rv = self.relistings.pop(0)
        return ObjectList(tuple(self.listing), self.list_rv)

    async def watch(
        self, kind: Any, namespace: Any, *, resource_version: str, **_: Any
    ) -> AsyncIterator[WatchEvent]:
        self.watch_from.append(resource_version)
        self.stats["watch_opened"] += 1
        if not self.scripts:
            self.done.set()
            await anyio.sleep_forever()
        events, error = self.scripts.pop(0)
        for event in events:
            yield event
        if error is not None:
            raise error


async def run_until_done(store: ScriptedStore) -> KindWatch:
    watch = KindWatch(store, SEMAPHORE, "ns")  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(5):
            await store.done.wait()
        tg.cancel_scope.cancel()
    return watch


async def test_lists_then_watches_from_the_list_version_and_resumes() -> None:
    store = ScriptedStore(
        [obj("a", 5)],
        [
            ([WatchEvent("MODIFIED", obj("a", 11, n=1))], None),  # server ends the stream
            ([WatchEvent("BOOKMARK", obj("", 15)), WatchEvent("ADDED", obj("b", 16))], None),
        ],
    )
    watch = await run_until_done(store)
    assert store.watch_from == ["10", "11", "16"]  # resumed from the last rv, bookmarks too
    assert store.stats["list"] == 1
    a = watch.get("a")
    assert a is not None
    assert a.status == {"n": 1}
    assert watch.get("b") is not None


async def test_gone_relists_and_drops_objects_deleted_meanwhile() -> None:
    store = ScriptedStore(
        [obj("a", 5), obj("b", 6)],
        [([], WatchExpired("gone", status=410))],
    )
    store.relistings = [([obj("b", 20)], "21")]  # "a" was deleted while we were away
    watch = await run_until_done(store)
    assert store.stats["list"] == 2
    assert watch.get("a") is None
    b = watch.get("b")
    assert b is not None
    assert b.resource_version == "20"
    assert store.watch_from == ["10", "21"]


class PagedStore(ScriptedStore):
    """Lists in pages of ``limit`` (a token per page); ``expire`` tokens answer 410, after
    which the listing is ``after_expiry`` (what changed meanwhile)."""

    def __init__(
        self,
        listing: list[KObject],
        *,
        expire: frozenset[str] = frozenset(),
        after_expiry: tuple[list[KObject], str] | None = None,
    ) -> None:
        super().__init__(listing, [])
        self.pages: list[tuple[int | None, str | None]] = []
        self.expire = set(expire)
        self.after_expiry = after_expiry

    async def list(
        self,
        kind: Any,
        namespace: Any,
        *,
        limit: int | None = None,
        continue_: Any = None,
        **_: Any,
    ) -> ObjectList:
        self.stats["list"] += 1
        self.pages.append((limit, continue_))
        if continue_ in self.expire:
            self.expire.discard(continue_)
            if self.after_expiry is not None:
                self.listing, self.list_rv = self.after_expiry
            raise WatchExpired("continue token expired", status=410)
        start = int(continue_ or 0)
        end = len(self.listing) if not limit else min(len(self.listing), start + limit)
        more = str(end) if end < len(self.listing) else ""
        return ObjectList(tuple(self.listing[start:end]), self.list_rv, continue_=more)


async def test_lists_in_pages_then_watches_from_the_snapshot_version() -> None:
    store = PagedStore([obj(f"o{i}", 1 + i) for i in range(5)])
    watch = KindWatch(store, SEMAPHORE, "ns")  # type: ignore[arg-type]
    watch.page_size = 2
    added: list[str] = []
    watch.add_listener(lambda etype, o: added.append(f"{etype} {o.name}"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(5):
            await store.done.wait()
        tg.cancel_scope.cancel()
    assert store.pages == [(2, None), (2, "2"), (2, "4")]
    assert added == [f"ADDED o{i}" for i in range(5)]
    assert sorted(o.name for o in watch.objects()) == [f"o{i}" for i in range(5)]
    assert store.watch_from == ["10"]


async def test_an_expired_continue_token_lists_anew_and_drops_only_what_is_gone() -> None:
    # Between the expired page and the fresh list, o1 was deleted and o3 changed.
    later = [obj("o0", 1), obj("o2", 3), obj("o3", 30), obj("o4", 5)]
    store = PagedStore(
        [obj(f"o{i}", 1 + i) for i in range(5)],
        expire=frozenset({"4"}),
        after_expiry=(later, "40"),
    )
    watch = KindWatch(store, SEMAPHORE, "ns")  # type: ignore[arg-type]
    watch.page_size = 2
    events: list[str] = []
    watch.add_listener(lambda etype, o: events.append(f"{etype} {o.name}"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(5):
            await store.done.wait()
        tg.cancel_scope.cancel()
    assert [c for _, c in store.pages] == [None, "2", "4", None, "2"]
    assert sorted(o.name for o in watch.objects()) == ["o0", "o2", "o3", "o4"]
    o3 = watch.get("o3")
    assert o3 is not None
    assert o3.resource_version == "30"
    assert events[4:] == ["MODIFIED o3", "ADDED o4", "DELETED o1"]
    assert watch.synced.is_set()
    assert store.watch_from == ["40"]


async def test_page_size_zero_lists_in_one_request() -> None:
    store = PagedStore([obj(f"o{i}", 1 + i) for i in range(5)])
    watch = KindWatch(store, SEMAPHORE, "ns")  # type: ignore[arg-type]
    watch.page_size = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(5):
            await store.done.wait()
        tg.cancel_scope.cancel()
    assert store.pages == [(None, None)]
    assert len(watch.objects()) == 5


class Records:
    """A listener keeping its own record of each object (the watch keeps none)."""

    def __init__(self) -> None:
        self.rvs: dict[tuple[str, str], str] = {("elsewhere", "x"): "1"}  # not the watch's
        self.events: list[tuple[str, str, str, dict[str, Any]]] = []

    def listen(self, etype: str, o: KObject) -> None:
        self.events.append((etype, o.name, o.resource_version, dict(o.status)))
        if etype == "DELETED":
            self.rvs.pop((o.namespace, o.name), None)
        else:
            self.rvs[(o.namespace, o.name)] = o.resource_version

    def version(self, namespace: str, name: str) -> str | None:
        return self.rvs.get((namespace, name))

    def keys(self) -> list[tuple[str, str]]:
        return list(self.rvs)


async def test_a_watch_whose_listener_keeps_the_objects_tells_it_every_change() -> None:
    store = ScriptedStore(
        [obj("a", 5), obj("b", 6)],
        [
            ([WatchEvent("MODIFIED", obj("a", 11, n=1))], WatchExpired("gone", status=410)),
        ],
    )
    store.relistings = [([obj("a", 11, n=1), obj("c", 20)], "21")]  # b deleted meanwhile
    records = Records()
    watch = KindWatch(store, SEMAPHORE, "ns", versions=records)  # type: ignore[arg-type]
    watch.add_listener(records.listen)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(5):
            await store.done.wait()
        tg.cancel_scope.cancel()
    assert records.events == [
        ("ADDED", "a", "5", {}),
        ("ADDED", "b", "6", {}),
        ("MODIFIED", "a", "11", {"n": 1}),
        ("ADDED", "c", "20", {}),  # the relist: a unchanged, c new, b gone
        ("DELETED", "b", "6", {}),
    ]
    assert watch.get("a") is None
    assert watch.objects() == []
    assert "objects=2" in repr(watch)
    watch._apply("MODIFIED", obj("c", 19))  # older than what was recorded: ignored
    assert len(records.events) == 5
    watch._apply("DELETED", obj("c", 22))
    assert records.events[-1][:2] == ("DELETED", "c")
    assert "objects=1" in repr(watch)
    assert records.version("elsewhere", "x") == "1"


async def test_connection_errors_resume_from_last_version_without_relisting() -> None:
    store = ScriptedStore(
        [],
        [([WatchEvent("ADDED", obj("a", 12))], APIError("reset")), ([], None)],
    )
    await run_until_done(store)
    assert store.stats["list"] == 1
    assert store.watch_from[:2] == ["10", "12"]


async def test_events_without_a_version_keep_the_last_one_to_resume_from() -> None:
    # A store that slims objects down to their names (a benchmark did): the stream's end
    # must resume, not re-list everything.
    bare = KObject({"metadata": {"name": "a", "namespace": "ns"}})
    store = ScriptedStore(
        [],
        [([WatchEvent("ADDED", obj("b", 12)), WatchEvent("MODIFIED", bare)], None), ([], None)],
    )
    await run_until_done(store)
    assert store.stats["list"] == 1
    assert store.watch_from[:2] == ["10", "12"]


async def test_next_change_fires_once_per_change_for_every_waiter() -> None:
    watch = KindWatch(ScriptedStore([], []), SEMAPHORE, "ns")  # type: ignore[arg-type]
    watch.synced.set()
    events = [watch.next_change("a") for _ in range(1000)]
    assert len({id(e) for e in events}) == 1  # one event shared by all waiters
    other = watch.next_change("b")
    watch._apply("ADDED", obj("a", 1))
    assert events[0].is_set()
    assert not other.is_set()
    assert not watch.next_change("a").is_set()  # a fresh event for the next change


async def test_observe_never_moves_the_cache_backwards() -> None:
    watch = KindWatch(ScriptedStore([], []), SEMAPHORE, "ns")  # type: ignore[arg-type]
    watch.synced.set()
    watch.observe(obj("a", 30, v="new"))
    watch._apply("MODIFIED", obj("a", 29, v="old"))  # a late watch event
    a = watch.get("a")
    assert a is not None
    assert a.status == {"v": "new"}


async def test_a_failing_listener_does_not_break_the_watch() -> None:
    watch = KindWatch(ScriptedStore([], []), SEMAPHORE, "ns")  # type: ignore[arg-type]
    seen: list[str] = []

    def bad(etype: str, o: KObject) -> None:
        raise RuntimeError("boom")

    watch.add_listener(bad)
    remove = watch.add_listener(lambda etype, o: seen.append(o.name))
    watch._apply("ADDED", obj("a", 1))
    remove()
    watch._apply("ADDED", obj("b", 2))
    assert seen == ["a"]

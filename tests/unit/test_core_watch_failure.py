"""A shared watch that cannot go on fails, and tells its waiters, instead of hanging them.

403 on list/watch fails at once; connection errors, timeouts and 5xx fail once the client's
retry budget is spent (budget 0 and ``inf`` here, so nothing depends on wall-clock time).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from konductor_sdk import (
    APIError,
    Client,
    ConfigurationError,
    ForbiddenError,
    Identity,
    NotFoundError,
    UnreachableError,
)
from konductor_sdk._kernel.objects import SEMAPHORE, KObject, ObjectList, WatchEvent
from konductor_sdk._kernel.watch import KindWatch

pytestmark = pytest.mark.anyio


def obj(name: str, rv: int) -> KObject:
    return KObject({"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}})


def no_answer() -> APIError:
    return APIError("GET /apis/...: cannot connect to the API server: refused", status=0)


class FailingStore:
    """Lists succeed while ``list_error`` is None; every watch raises ``watch_error()``."""

    def __init__(
        self,
        *,
        list_error: Callable[[], Exception] | None = None,
        watch_error: Callable[[], Exception] = no_answer,
        hang_list: bool = False,
    ) -> None:
        self.list_error = list_error
        self.watch_error = watch_error
        self.hang_list = hang_list
        self.stats: Counter[str] = Counter()
        self.may_fail = anyio.Event()  # watches fail only once this is set
        self.third_watch = anyio.Event()

    async def list(self, kind: Any, namespace: Any, **_: Any) -> ObjectList:
        self.stats["list"] += 1
        if self.hang_list:
            await anyio.sleep_forever()
        if self.list_error is not None:
            raise self.list_error()
        return ObjectList((obj("a", 5),), "10")

    async def watch(self, kind: Any, namespace: Any, **_: Any) -> AsyncIterator[WatchEvent]:
        self.stats["watch"] += 1
        if self.stats["watch"] == 3:
            self.third_watch.set()
        await self.may_fail.wait()
        raise self.watch_error()
        yield  # pragma: no cover - makes this an async generator


async def test_forbidden_list_fails_at_once_for_every_waiter() -> None:
    store = FailingStore(list_error=lambda: ForbiddenError("list forbidden", status=403))
    watch = KindWatch(store, SEMAPHORE, "ns", retry_budget=math.inf)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with pytest.raises(ForbiddenError, match="list forbidden"):
            await watch.wait_synced()
    assert store.stats["list"] == 1  # not retried: retrying cannot help
    assert isinstance(watch.failed, ForbiddenError)
    with pytest.raises(ForbiddenError) as info:
        watch.next_change("a")
    assert info.value.__cause__ is watch.failed  # a fresh error per waiter, same cause


async def test_a_synced_watch_that_loses_the_server_wakes_its_waiters_with_an_error() -> None:
    store = FailingStore()
    watch = KindWatch(store, SEMAPHORE, "ns", retry_budget=0)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    async def waiter() -> None:
        while True:
            try:
                changed = watch.next_change("a")
            except APIError as exc:
                errors.append(exc)
                return
            await changed.wait()

    with anyio.fail_after(10):  # a hang here is the bug; the test itself needs no time
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            await watch.wait_synced()
            tg.start_soon(waiter)
            store.may_fail.set()
    assert [type(e) for e in errors] == [UnreachableError]
    failed = watch.failed
    assert isinstance(failed, UnreachableError)
    assert failed.budget == 0
    assert "retry budget 0s" in str(failed)
    assert "cannot connect to the API server" in str(failed)
    assert isinstance(failed.__cause__, APIError)
    with pytest.raises(UnreachableError):
        watch.next_any_change()


async def test_a_hanging_list_counts_against_the_budget() -> None:
    watch = KindWatch(FailingStore(hang_list=True), SEMAPHORE, "ns", retry_budget=0)  # type: ignore[arg-type]
    watch.list_floor = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(10), pytest.raises(UnreachableError, match="timed out"):
            await watch.wait_synced()


async def test_a_persistent_non_transport_error_fails_as_itself() -> None:
    store = FailingStore(list_error=lambda: NotFoundError("404 page not found", status=404))
    watch = KindWatch(store, SEMAPHORE, "ns", retry_budget=0)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(10), pytest.raises(NotFoundError, match="page not found"):
            await watch.wait_synced()


async def test_within_the_budget_the_watch_keeps_retrying() -> None:
    store = FailingStore()
    watch = KindWatch(store, SEMAPHORE, "ns", retry_budget=math.inf)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        await watch.wait_synced()
        store.may_fail.set()
        with anyio.fail_after(30):
            await store.third_watch.wait()
        assert watch.failed is None
        assert watch.next_change("a") is not None
        tg.cancel_scope.cancel()


async def test_client_watch_raises_and_a_later_call_starts_a_new_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KONDUCTOR_NAMESPACE", raising=False)
    store = FailingStore(list_error=lambda: ForbiddenError("nope", status=403))
    async with Client(store=store, namespace="ns", identity=Identity("t")) as client:  # type: ignore[arg-type]
        with pytest.raises(ForbiddenError):
            await client.watch(SEMAPHORE, "ns")
        store.list_error = None
        watch = await client.watch(SEMAPHORE, "ns")
        assert watch.failed is None
        assert watch.get("a") is not None
        assert client.cached_watch(SEMAPHORE, "ns") is watch


def test_retry_budget_argument_environment_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KONDUCTOR_RETRY_BUDGET", raising=False)
    assert Client(identity=Identity("t")).retry_budget == 30
    assert Client(identity=Identity("t"), retry_budget=2.5).retry_budget == 2.5
    monkeypatch.setenv("KONDUCTOR_RETRY_BUDGET", "7")
    client = Client(identity=Identity("t"))
    assert client.retry_budget == 7
    assert "retry_budget=7" in repr(client)
    assert Client(identity=Identity("t"), retry_budget=math.inf).retry_budget == math.inf
    for bad in (-1, math.nan, True, "3"):
        with pytest.raises(ConfigurationError, match="retry_budget must be"):
            Client(identity=Identity("t"), retry_budget=bad)  # type: ignore[arg-type]
    monkeypatch.setenv("KONDUCTOR_RETRY_BUDGET", "soon")
    with pytest.raises(ConfigurationError, match=r"\$KONDUCTOR_RETRY_BUDGET must be"):
        Client(identity=Identity("t"))


async def test_konductor_namespace_is_the_clients_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KONDUCTOR_NAMESPACE", "from-env")
    store = FailingStore()
    async with Client(store=store, identity=Identity("t")) as client:  # type: ignore[arg-type]
        assert client.namespace == "from-env"
    async with Client(store=store, identity=Identity("t"), namespace="given") as client:  # type: ignore[arg-type]
        assert client.namespace == "given"
    monkeypatch.setenv("KONDUCTOR_NAMESPACE", "Bad_NS")
    with pytest.raises(ConfigurationError, match=r"\$KONDUCTOR_NAMESPACE must be a namespace"):
        Client(identity=Identity("t"))
    with pytest.raises(ConfigurationError, match="namespace must be a namespace name"):
        Client(identity=Identity("t"), namespace="Bad_NS")

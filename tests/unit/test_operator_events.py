"""EventRecorder: aggregation by (object, type, reason), token buckets, bounded pending."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from _operator_fakes import FakeStore

from konductor_operator._events import EventRecorder, TokenBucket
from konductor_sdk import Client, Identity
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import EVENT, KObject

pytestmark = pytest.mark.anyio


def obj(name: str = "s", uid: str = "u1") -> KObject:
    return KObject(
        {
            "apiVersion": "sync.konductor.io/v1alpha1",
            "kind": "Semaphore",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "5"},
        }
    )


@pytest.fixture
async def setup() -> AsyncIterator[tuple[FakeStore, FakeClock, EventRecorder]]:
    store = FakeStore()
    clock = FakeClock()
    client = Client(store=store, namespace="ns", identity=Identity("op"), clock=clock)
    await client.connect()
    recorder = EventRecorder(
        client,
        clock=clock,
        instance="replica-0",
        per_object_burst=2,
        per_object_rate=0.5,
        global_burst=100,
        global_rate=100,
        max_pending=3,
    )
    yield store, clock, recorder
    await client.aclose()


def events(store: FakeStore) -> list[dict[str, Any]]:
    return [raw for (plural, _, _), raw in sorted(store.objects.items()) if plural == EVENT.plural]


async def test_first_event_is_written_as_a_core_v1_event(setup: Any) -> None:
    store, _, recorder = setup
    recorder.emit(obj(), "Granted", "permit to a", type="Normal")
    assert await recorder.flush() is None
    [event] = events(store)
    assert event["involvedObject"] == {
        "apiVersion": "sync.konductor.io/v1alpha1",
        "kind": "Semaphore",
        "name": "s",
        "namespace": "ns",
        "uid": "u1",
        "resourceVersion": "5",
    }
    assert (event["reason"], event["message"], event["type"], event["count"]) == (
        "Granted",
        "permit to a",
        "Normal",
        1,
    )
    assert event["source"] == {"component": "konductor-operator", "host": "replica-0"}
    assert event["metadata"]["name"].startswith("s.")


async def test_repeats_bump_the_count_of_one_event(setup: Any) -> None:
    store, clock, recorder = setup
    for i in range(3):
        recorder.emit(obj(), "Granted", f"permit to h{i}")
        await recorder.flush()
        clock.advance(2)  # one token per 2 s per object
    [event] = events(store)
    assert event["count"] == 3
    assert event["message"] == "(combined from similar events): permit to h2"
    stats = recorder.statistics()
    assert (stats.created, stats.updated, stats.emitted) == (1, 2, 3)


async def test_a_hot_object_is_paced_by_its_bucket_and_nothing_is_lost(setup: Any) -> None:
    store, clock, recorder = setup

    def writes() -> int:
        return int(store.stats["post"] + store.stats["patch"])

    for round_ in range(2):  # burst 2: a create, then one count bump
        for i in range(1000):
            recorder.emit(obj(), "Granted", f"permit {round_}.{i}")
        assert await recorder.flush() is None
    assert writes() == 2
    for i in range(1000):
        recorder.emit(obj(), "Granted", f"again {i}")
    wait = await recorder.flush()
    assert wait == pytest.approx(2.0), "the bucket is empty: next token in 1/rate seconds"
    assert writes() == 2
    recorder.emit(obj(), "Reaped", "a reap is not held up by the chatty reason")
    await recorder.flush()
    assert writes() == 3
    clock.advance(2)
    await recorder.flush()
    granted = next(e for e in events(store) if e["reason"] == "Granted")
    assert granted["count"] == 3000
    assert recorder.statistics().dropped == 0


async def test_other_objects_are_not_starved_by_a_hot_one(setup: Any) -> None:
    store, _, recorder = setup
    for _ in range(50):
        recorder.emit(obj("hot", "u-hot"), "Granted", "x")
        await recorder.flush()
    recorder.emit(obj("cold", "u-cold"), "Granted", "y")
    await recorder.flush()
    assert {e["involvedObject"]["name"] for e in events(store)} == {"hot", "cold"}


async def test_too_many_distinct_pending_events_are_dropped_and_counted(setup: Any) -> None:
    store, _, recorder = setup
    for i in range(5):
        recorder.emit(obj(), f"Reason{i}", "m")
    stats = recorder.statistics()
    assert (stats.pending, stats.dropped) == (3, 2)
    await recorder.flush()
    assert len(events(store)) == 3


async def test_an_expired_event_is_recreated(setup: Any) -> None:
    store, clock, recorder = setup
    recorder.emit(obj(), "Granted", "a")
    await recorder.flush()
    [event] = events(store)
    store.remove(EVENT, "ns", event["metadata"]["name"])  # the apiserver's --event-ttl
    clock.advance(2)
    recorder.emit(obj(), "Granted", "b")
    await recorder.flush()
    [again] = events(store)
    assert again["count"] == 2
    assert again["metadata"]["name"] != event["metadata"]["name"]


async def test_write_errors_are_counted_not_raised(setup: Any) -> None:
    store, _, recorder = setup
    recorder.emit(obj(name="s", uid="u1"), "Granted", "a")
    recorder._records[next(iter(recorder._records))].namespace = "missing-ns"

    def fail(verb: str, key: Any) -> None:
        from konductor_sdk._kernel.errors import ForbiddenError

        raise ForbiddenError("no", status=403)

    store.before_write = fail
    await recorder.flush()
    assert recorder.statistics().failed == 1


def test_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(clock, burst=2, rate=0.5)
    assert bucket.take()
    assert bucket.take()
    assert not bucket.take()
    assert bucket.wait_time() == pytest.approx(2.0)
    clock.advance(1)
    assert not bucket.take()
    clock.advance(1)
    assert bucket.take()
    clock.advance(100)
    assert [bucket.take() for _ in range(3)] == [True, True, False], "capped at burst"

"""The "coordination" backend interoperates with client-go on coordination.k8s.io/v1 Lease.

Two stand-ins for a Go controller, neither sharing code with ``_coordination``:

* ``tests/fixtures/client_go_lease.json``: a Lease exactly as the API server returns it
  after client-go's ``LeaseLock.Update`` wrote it (MicroTime timestamps, managedFields);
* :class:`GoElector`: client-go's ``tryAcquireOrRenew`` and ``release`` transcribed from
  ``k8s.io/client-go/tools/leaderelection/leaderelection.go``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from konductor_sdk import Client, ConflictError, NotFoundError
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import COORDINATION_LEASE, KObject
from konductor_sdk.election import ElectionConfig, LeaderElector

MakeClient = Callable[..., Client]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "client_go_lease.json"
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
RECORD_FIELDS = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
)


def go_now() -> str:
    # metav1.MicroTime marshals as RFC 3339 with six fractional digits.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GoElector:
    """client-go's tryAcquireOrRenew/release (slow path), on the real API server."""

    def __init__(self, client: Client, name: str, identity: str, duration: int) -> None:
        self.client, self.name, self.identity, self.duration = client, name, identity, duration
        self.observed: dict[str, Any] = {}
        self.observed_raw = ""
        self.observed_time = 0.0
        self.lease: KObject | None = None
        self.last_sent = 0.0
        self.renewals = 0

    def is_leader(self) -> bool:
        return self.observed.get("holderIdentity") == self.identity

    async def try_acquire_or_renew(self) -> bool:
        store, ns = self.client.store, self.client.namespace
        now = go_now()
        record: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": now,
            "renewTime": now,
        }
        try:
            self.lease = await store.get(COORDINATION_LEASE, ns, self.name)
        except NotFoundError:
            record["leaseTransitions"] = 0
            body = {"metadata": {"name": self.name, "namespace": ns}, "spec": record}
            self.lease = await store.create(COORDINATION_LEASE, ns, body)
            self._set_observed(record)
            return True
        old = {k: self.lease.spec[k] for k in RECORD_FIELDS if k in self.lease.spec}
        raw = json.dumps(old, sort_keys=True)
        if raw != self.observed_raw:
            self.observed, self.observed_raw, self.observed_time = old, raw, time.monotonic()
        valid = self.observed_time + int(old.get("leaseDurationSeconds", 0)) > time.monotonic()
        if old.get("holderIdentity") and valid and not self.is_leader():
            return False
        if self.is_leader():
            record["acquireTime"] = old.get("acquireTime")
            record["leaseTransitions"] = old.get("leaseTransitions", 0)
        else:
            record["leaseTransitions"] = old.get("leaseTransitions", 0) + 1
        return await self._update(record)

    async def release(self) -> None:
        if not self.is_leader():
            return
        now = go_now()
        record = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": self.observed.get("leaseTransitions", 0),
        }
        await self._update(record)

    async def _update(self, record: dict[str, Any]) -> bool:
        assert self.lease is not None
        body = dict(self.lease.raw)
        body["spec"] = record
        self.last_sent = time.monotonic()
        try:
            self.lease = await self.client.store.replace(COORDINATION_LEASE, body)
        except ConflictError:
            return False
        self._set_observed(record)
        self.renewals += 1
        return True

    def _set_observed(self, record: dict[str, Any]) -> None:
        self.observed = record
        self.observed_raw = json.dumps(record, sort_keys=True)
        self.observed_time = time.monotonic()


def config(name: str, identity: str, **kwargs: Any) -> ElectionConfig:
    values: dict[str, Any] = {"lease_duration": 2, "renew_deadline": 1.5, "retry_period": 0.25}
    return ElectionConfig(name, identity=identity, backend="coordination", **{**values, **kwargs})


class Leads:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.at: list[float] = []

    async def __call__(self, token: int) -> None:
        self.tokens.append(token)
        self.at.append(time.monotonic())
        await anyio.sleep_forever()


@asynccontextmanager
async def running(elector: LeaderElector) -> AsyncIterator[anyio.CancelScope]:
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def run() -> None:
            with scope:
                await elector.run()

        tg.start_soon(run)
        yield scope
        scope.cancel()


async def until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        while not predicate():  # noqa: ASYNC110 - elector state has no event to await
            await anyio.sleep(0.01)


async def install_fixture(client: Client, name: str, **spec: Any) -> KObject:
    raw = json.loads(FIXTURE.read_text())
    body = {"metadata": {"name": name, "namespace": client.namespace}, "spec": raw["spec"]}
    body["spec"].update(spec)
    await client.connect()
    return await client.store.create(COORDINATION_LEASE, client.namespace, body)


@pytest.mark.anyio
async def test_respects_a_client_go_record_until_it_expires_on_our_clock(
    make_client: MakeClient,
) -> None:
    base = make_client("py")
    await base.connect()
    clock = FakeClock()
    c = Client(store=base.store, namespace=base.namespace, identity=base.identity, clock=clock)
    go = await install_fixture(c, "interop")
    go_identity = go.spec["holderIdentity"]
    leads = Leads()
    elector = LeaderElector(config("interop", "py-replica"), client=c, on_started_leading=leads)
    try:
        async with running(elector) as scope:
            # The record's renewTime is long past on any wall clock: irrelevant. What counts
            # is that it has not changed for leaseDurationSeconds (15) on *our* clock.
            await until(lambda: elector.statistics().evaluations >= 3)
            assert not elector.is_leader
            assert elector.leader == go_identity
            clock.advance(14.75)
            seen = elector.statistics().evaluations
            await until(lambda: elector.statistics().evaluations >= seen + 2)
            assert not elector.is_leader
            clock.advance(0.5)
            await until(lambda: elector.is_leader)
            scope.cancel()
        after = (await c.store.get(COORDINATION_LEASE, c.namespace, "interop")).spec
    finally:
        await c.aclose()
    assert leads.tokens == [4]  # the fixture's leaseTransitions (3) + 1
    # Released on cancel, the way client-go does: no holder, 1 s, transitions kept.
    assert after["holderIdentity"] == ""
    assert after["leaseDurationSeconds"] == 1
    assert after["leaseTransitions"] == 4
    assert MICROTIME.match(after["acquireTime"])
    assert MICROTIME.match(after["renewTime"])


@pytest.mark.anyio
async def test_our_record_is_what_client_go_writes(make_client: MakeClient) -> None:
    c = make_client("py")
    await install_fixture(c, "shape", leaseDurationSeconds=1, holderIdentity="")
    leads = Leads()
    elector = LeaderElector(config("shape", "py-1"), client=c, on_started_leading=leads)
    async with running(elector) as scope:
        await until(lambda: elector.is_leader)
        spec = (await c.store.get(COORDINATION_LEASE, c.namespace, "shape")).spec
        scope.cancel()
    assert set(spec) == set(RECORD_FIELDS)
    assert spec["holderIdentity"] == "py-1"
    assert spec["leaseDurationSeconds"] == 2
    assert spec["leaseTransitions"] == 4 == leads.tokens[0]
    assert MICROTIME.match(spec["acquireTime"])
    assert MICROTIME.match(spec["renewTime"])


@pytest.mark.anyio
async def test_a_crashed_go_leader_is_replaced_only_after_the_lease_duration(
    make_client: MakeClient,
) -> None:
    go = GoElector(make_client("go"), "crash", "go-controller-0", duration=2)
    await go.client.connect()
    leads = Leads()
    py = LeaderElector(config("crash", "py-0"), client=make_client("py"), on_started_leading=leads)
    async with anyio.create_task_group() as tg:
        alive = anyio.CancelScope()

        async def go_loop() -> None:
            with alive:
                while True:
                    await go.try_acquire_or_renew()
                    await anyio.sleep(0.5)  # client-go's RetryPeriod

        tg.start_soon(go_loop)
        await until(go.is_leader)
        async with running(py) as scope:
            # Renewals keep the Python replica out for many lease durations...
            await until(lambda: go.renewals >= 7)
            assert not py.is_leader
            assert py.leader == "go-controller-0"
            alive.cancel()  # ...and then the Go process dies without releasing.
            await until(lambda: py.is_leader)
            scope.cancel()
    # The takeover came at least one lease duration after the last renewal was *sent*.
    assert leads.at[0] - go.last_sent >= 2.0
    assert leads.tokens == [go.observed["leaseTransitions"] + 1]


@pytest.mark.anyio
async def test_a_go_candidate_respects_us_and_takes_over_after_our_release(
    make_client: MakeClient,
) -> None:
    go = GoElector(make_client("go"), "shared", "go-controller-1", duration=2)
    await go.client.connect()
    py = LeaderElector(config("shared", "py-1", lease_duration=3600), client=make_client("py"))
    async with running(py) as scope:
        await until(lambda: py.is_leader)
        for _ in range(5):
            assert not await go.try_acquire_or_renew()
            await anyio.sleep(0.2)  # client-go's retry loop
        scope.cancel()
    spec = (await go.client.store.get(COORDINATION_LEASE, go.client.namespace, "shared")).spec
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    # An hour-long lease, yet the Go candidate gets it on its next try: we released it.
    assert await go.try_acquire_or_renew()
    assert go.observed["leaseTransitions"] == spec["leaseTransitions"] + 1


@pytest.mark.anyio
async def test_a_go_release_lets_us_in_at_once(make_client: MakeClient) -> None:
    go = GoElector(make_client("go"), "handover", "go-controller-2", duration=3600)
    await go.client.connect()
    assert await go.try_acquire_or_renew()
    leads = Leads()
    py = LeaderElector(
        config("handover", "py-2"), client=make_client("py"), on_started_leading=leads
    )
    async with running(py) as scope:
        await until(lambda: py.leader == "go-controller-2" and py.statistics().evaluations >= 2)
        assert not py.is_leader
        await go.release()
        await until(lambda: py.is_leader)
        scope.cancel()
    assert leads.tokens == [1]

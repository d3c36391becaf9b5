"""The reaper racing real clients on the real API server.

* Many clients contend for a semaphore while some of them die holding a permit; only the
  operator can free those units. Invariants on every version the watch delivers: never
  more units in use than permits, no live permit ever lost, and every dead one reaped.
* A hypothesis state machine drives entries (grant, renew, die, time passes) against an
  in-process core controller on a fake clock: a live entry is never removed, a dead one is
  removed once its TTL has passed on the operator's clock.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from konductor_operator import (
    CoreController,
    EventRecorder,
    Metrics,
    Operator,
    OperatorConfig,
    OperatorContext,
)
from konductor_operator._core import run as core_run
from konductor_sdk import Client, Identity
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import SEMAPHORE, KObject, json_pointer
from konductor_sdk._machines.rules import registered
from konductor_sdk.semaphore import Semaphore
from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio
PERMITS = 3


async def test_contention_with_dying_holders_never_overgrants_or_loses_a_live_permit(
    kubeconfig: Path, namespace: str
) -> None:
    name = "contended"
    config = OperatorConfig(namespaces=(namespace,), metrics_port=0, leader_elect=False, workers=4)
    violations: list[str] = []
    async with Client(kubeconfig=kubeconfig, namespace=namespace) as admin:
        await Semaphore(name, permits=PERMITS, client=admin).create()
        watch = await admin.watch(SEMAPHORE, namespace)

        def check(etype: str, obj: KObject) -> None:
            used = sum(int(e.get("weight", 1)) for e in obj.status.get("holders", {}).values())
            if used > PERMITS:
                violations.append(f"rv {obj.resource_version}: {used} units in use")

        watch.add_listener(check)
        operator = Operator(config, client=admin, controllers=[("core", core_run)])
        dead_keys: list[str] = []
        live_cycles = 0

        async def worker(i: int) -> None:
            nonlocal live_cycles
            rng = random.Random(i)
            ident = Identity(holder=f"worker-{i}")
            async with Client(kubeconfig=kubeconfig, namespace=namespace, identity=ident) as c:
                sem = Semaphore(name, client=c, ttl=2)
                for cycle in range(4):
                    if i % 3 == 0 and cycle == 1:
                        # Dies holding a permit: its renewer stops, nothing is released.
                        async with Client(
                            kubeconfig=kubeconfig,
                            namespace=namespace,
                            identity=Identity(holder=f"dying-{i}"),
                        ) as doomed:
                            permit = await Semaphore(name, client=doomed, ttl=2).acquire()
                            dead_keys.append(permit.key)
                        continue
                    async with sem.hold() as permit:
                        await anyio.sleep(rng.uniform(0, 0.3))
                        assert not permit.lost, f"live permit lost: {permit.lost_reason}"
                    live_cycles += 1

        async with anyio.create_task_group() as tg:
            await tg.start(operator.run)
            with anyio.fail_after(120):
                async with anyio.create_task_group() as workers:
                    for i in range(9):
                        workers.start_soon(worker, i)
            with anyio.fail_after(30):
                while True:
                    changed = watch.next_change(name, namespace)
                    obj = watch.get(name, namespace)
                    if obj is not None and not obj.status.get("holders"):
                        break
                    await changed.wait()

            def reaped() -> float | None:
                return operator.metrics.registry.get_sample_value(  # type: ignore[no-any-return]
                    "konductor_operator_reaped_total", {"kind": "Semaphore", "reason": "Expired"}
                )

            # The watch can deliver the reaping write before the operator's task resumes to
            # count it; cancelling then would drop the count. Let it finish (local state,
            # no event to await: checked every scheduling round, bounded).
            with anyio.move_on_after(10):
                while (reaped() or 0) < len(dead_keys):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert violations == []
    assert len(dead_keys) == 3
    assert live_cycles == 9 * 4 - 3
    assert reaped() == 3


# -- the state machine on the real server -------------------------------------------------

TTL = 10


class RealServerReaper(RuleBasedStateMachine):
    """Entries written by the test (as owners would), the operator in-process on a fake
    clock; each step runs until a fixed point: the operator's cache has the server's
    latest version and its work queue is empty."""

    kubeconfig: Path
    namespace: str

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.name = f"sm-{secrets.token_hex(3)}"
        self.clock = FakeClock()
        self._cm = self.portal.wrap_async_context_manager(self._running())
        self._cm.__enter__()
        self.next = 0
        self.alive: set[str] = set()
        self.last_renewal: dict[str, float] = {}

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with Client(kubeconfig=self.kubeconfig, namespace=self.namespace) as client:
            self.client = client
            await Semaphore(self.name, permits=100, client=client).create()
            ctx = OperatorContext(
                client=client,
                namespaces=(self.namespace,),
                events=EventRecorder(client, clock=self.clock),
                metrics=Metrics(),
                clock=self.clock,
                config=OperatorConfig(metrics_port=0, leader_elect=False),
                logger=logging.getLogger("test.sm"),
            )
            ctx.health.connected = True
            self.core = CoreController(ctx, rules={"Semaphore": registered()["Semaphore"]})
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.core.run)
                with anyio.fail_after(30):
                    await self.core.ready.wait()
                yield
                tg.cancel_scope.cancel()

    def teardown(self) -> None:
        try:
            self._cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    async def _settle(self) -> None:
        watch = self.client.cached_watch(SEMAPHORE, self.namespace)
        assert watch is not None
        with anyio.fail_after(30):
            while True:
                fresh = await self.client.store.get(SEMAPHORE, self.namespace, self.name)
                while True:
                    changed = watch.next_change(self.name, self.namespace)
                    cached = watch.get(self.name, self.namespace)
                    if cached is not None and int(cached.resource_version) >= int(
                        fresh.resource_version
                    ):
                        break
                    await changed.wait()
                self.core.poke()
                await anyio.lowlevel.checkpoint()
                await self.core.queue.join()
                again = await self.client.store.get(SEMAPHORE, self.namespace, self.name)
                if again.resource_version == fresh.resource_version and self.core.queue.idle():
                    return

    def settle(self) -> None:
        self.portal.call(self._settle)

    def holders(self) -> dict[str, Any]:
        obj = self.portal.call(self.client.store.get, SEMAPHORE, self.namespace, self.name)
        return dict(obj.status.get("holders") or {})

    async def _grant(self, key: str) -> None:
        now = "2026-01-01T00:00:00.000000Z"
        entry = {
            "holder": key,
            "ttlSeconds": TTL,
            "renewCount": 0,
            "acquiredAt": now,
            "renewedAt": now,
            "weight": 1,
            "priority": 0,
            "preemptible": False,
        }

        def add(obj: KObject) -> dict[str, Any]:
            status = dict(obj.status)
            token = int(status.get("fencingToken", 0)) + 1
            status["holders"] = {**status.get("holders", {}), key: {**entry, "token": token}}
            status["fencingToken"] = token
            return registered()["Semaphore"].normalize(obj.spec, status)

        await update_status(self.client, SEMAPHORE, self.namespace, self.name, add)

    async def _renew(self, key: str) -> None:
        obj = await self.client.store.get(SEMAPHORE, self.namespace, self.name)
        count = int(obj.status["holders"][key]["renewCount"])
        ptr = json_pointer("status", "holders", key)
        await self.client.store.patch(
            SEMAPHORE,
            self.namespace,
            self.name,
            [
                {"op": "test", "path": f"{ptr}/holder", "value": key},
                {"op": "replace", "path": f"{ptr}/renewCount", "value": count + 1},
            ],
            patch_type="json",
            subresource="status",
        )

    @rule()
    def grant(self) -> None:
        key = f"k{self.next}"
        self.next += 1
        self.portal.call(self._grant, key)
        self.settle()
        self.alive.add(key)
        self.last_renewal[key] = self.clock.monotonic()

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.alive)))
        self.portal.call(self._renew, key)
        self.settle()
        self.last_renewal[key] = self.clock.monotonic()

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def die(self, data: st.DataObject) -> None:
        self.alive.discard(data.draw(st.sampled_from(sorted(self.alive))))

    @rule(seconds=st.sampled_from([1.0, 4.0, 9.9, 10.0, 14.0]))
    def time_passes(self, seconds: float) -> None:
        # Live owners renew every TTL/3, as their Renewal does.
        step = TTL / 3
        while seconds > 0:
            dt = min(step, seconds)
            self.clock.advance(dt)
            seconds -= dt
            self.settle()
            for key in sorted(self.alive):
                if self.clock.monotonic() - self.last_renewal[key] >= step:
                    self.portal.call(self._renew, key)
                    self.settle()
                    self.last_renewal[key] = self.clock.monotonic()

    @invariant()
    def live_entries_stay_and_dead_ones_go_after_their_ttl(self) -> None:
        holders = set(self.holders())
        assert self.alive <= holders, f"live entries reaped: {self.alive - holders}"
        now = self.clock.monotonic()
        for key in holders - self.alive:
            assert now - self.last_renewal[key] < TTL, f"{key} outlived its TTL"


@pytest.fixture
def real_server_machine(kubeconfig: Path, namespace: str) -> type[RealServerReaper]:
    RealServerReaper.kubeconfig = kubeconfig
    RealServerReaper.namespace = namespace
    return RealServerReaper


def test_reaper_state_machine_on_the_real_server(
    real_server_machine: type[RealServerReaper], control_plane: ClusterHandle
) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        real_server_machine,
        settings=settings(max_examples=6, stateful_step_count=10, deadline=None),
    )

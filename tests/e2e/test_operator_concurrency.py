"""The reaper racing real clients on the real API server.

* Many clients contend for a semaphore while some of them die holding a permit; only the
  operator can free those units. Invariants on every version the watch delivers: never
  more units in use than permits, no live permit ever lost, and every dead one reaped.
* A hypothesis state machine drives sessions and their grants (grant, renew, die, time
  passes) against an in-process core controller on a fake clock: a live session's grant is
  never removed, a dead one's is removed once the session's TTL has passed on the
  operator's clock.
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
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from konductor_operator import (
    CoreController,
    Operator,
    OperatorConfig,
    OperatorContext,
)
from konductor_operator._core import run as core_run
from konductor_sdk import Client, Identity, NotFoundError, Permit
from konductor_sdk._kernel.clock import FakeClock, rfc3339
from konductor_sdk._kernel.objects import SEMAPHORE, SESSION, KObject, ResourceKind
from konductor_sdk._machines.rules import registered
from konductor_sdk._machines.semaphore_plan import grant_patch
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
        dead: list[Permit] = []
        live_cycles = 0

        async def worker(i: int) -> None:
            nonlocal live_cycles
            rng = random.Random(i)
            ident = Identity(holder=f"worker-{i}")
            async with Client(kubeconfig=kubeconfig, namespace=namespace, identity=ident) as c:
                sem = Semaphore(name, client=c, ttl=2)
                for cycle in range(4):
                    if i % 3 == 0 and cycle == 1:
                        # Dies holding a permit: its client closes without releasing, so
                        # its session is kept but no longer renewed; nothing is released.
                        async with Client(
                            kubeconfig=kubeconfig,
                            namespace=namespace,
                            identity=Identity(holder=f"dying-{i}"),
                        ) as doomed:
                            dead.append(await Semaphore(name, client=doomed, ttl=2).acquire())
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
                    "konductor_operator_reaped_total",
                    {"kind": "Semaphore", "reason": "SessionEnded"},
                )

            # The watch can deliver the reaping write before the operator's task resumes to
            # count it; cancelling then would drop the count. Let it finish (local state,
            # no event to await: checked every scheduling round, bounded).
            with anyio.move_on_after(10):
                while (reaped() or 0) < len(dead):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        # Each dead holder's session was ended and deleted by the operator.
        for permit in dead:
            with pytest.raises(NotFoundError):
                await admin.store.get(SESSION, namespace, permit.session)
    assert violations == []
    assert len(dead) == 3
    assert live_cycles == 9 * 4 - 3
    assert reaped() == 3


# -- the state machine on the real server -------------------------------------------------

TTL = 10
PERMITS_SM = 100


class RealServerReaper(RuleBasedStateMachine):
    """Owners' writes made by the test the way the SDK makes them (a Session per owner,
    renewed by bumping its renewCount; grants under their first slot naming the session,
    written with the SDK's own grant patch), the operator in-process on a fake clock. Each
    step runs until a fixed point: the operator's caches have the server's latest versions
    and its work queue is empty. A live session's grants stay; a dead one's go once its TTL
    has passed on the operator's clock, not before."""

    kubeconfig: Path
    namespace: str
    reaps = 0
    """Grants of dead sessions seen reaped, over all runs."""

    def __init__(self) -> None:
        super().__init__()
        self.reaped: set[str] = set()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.name = f"sm-{secrets.token_hex(3)}"
        self.clock = FakeClock()
        self._cm = self.portal.wrap_async_context_manager(self._running())
        self._cm.__enter__()
        self.next = 0
        self.session_of: dict[str, str] = {}
        """Grant (its holder field, unique per grant here) -> the session it names."""
        self.alive: set[str] = set()
        """Sessions still renewed by their owner."""
        self.renewals: dict[str, int] = {}
        self.last_renewal: dict[str, float] = {}

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with Client(kubeconfig=self.kubeconfig, namespace=self.namespace) as client:
            self.client = client
            await Semaphore(self.name, permits=PERMITS_SM, client=client).create()
            self.user = await client.whoami()
            ctx = OperatorContext.standalone(
                client,
                (self.namespace,),
                config=OperatorConfig(metrics_port=0, leader_elect=False),
                clock=self.clock,
                logger=logging.getLogger("test.sm"),
            )
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

    async def _cached(self, kind: ResourceKind, written: KObject) -> None:
        """Until the operator's cache has ``written``: the client's shared watch for the
        primitives, the operator's own slim watch for sessions."""
        if kind == SESSION:
            watch = self.core._session_watches.get(self.namespace)
        else:
            watch = self.client.cached_watch(kind, self.namespace)
        assert watch is not None
        with anyio.fail_after(30):
            while True:
                changed = watch.next_change(written.name, self.namespace)
                # The operator's session watch keeps versions only (its ledger has the rest).
                seen = watch.version(written.name, self.namespace)
                if seen is not None and int(seen) >= int(written.resource_version):
                    return
                await changed.wait()

    async def _settle(self) -> None:
        with anyio.fail_after(30):
            while True:
                fresh = await self.client.store.get(SEMAPHORE, self.namespace, self.name)
                await self._cached(SEMAPHORE, fresh)
                self.core.poke()
                await anyio.lowlevel.checkpoint()
                await self.core.queue.join()
                again = await self.client.store.get(SEMAPHORE, self.namespace, self.name)
                if again.resource_version == fresh.resource_version and self.core.queue.idle():
                    return

    def settle(self) -> None:
        self.portal.call(self._settle)

    def holders(self) -> dict[str, Any]:
        """The grants on the server, by their holder field."""
        obj = self.portal.call(self.client.store.get, SEMAPHORE, self.namespace, self.name)
        return {str(e["holder"]): e for e in (obj.status.get("holders") or {}).values()}

    async def _open_session(self) -> str:
        spec = {
            "holder": f"owner-{self.next}",
            "ttlSeconds": TTL,
            "renewCount": 0,
            "renewedAt": rfc3339(self.clock.now()),
        }
        created = await self.client.store.create(
            SESSION, self.namespace, {"metadata": {"generateName": f"{self.name}-"}, "spec": spec}
        )
        await self._cached(SESSION, created)
        return created.name

    async def _grant(self, key: str, session: str) -> None:
        obj = await self.client.store.get(SEMAPHORE, self.namespace, self.name)
        taken = {int(slot) for slot in obj.status.get("holders") or {}}
        slot = min(set(range(PERMITS_SM)) - taken)
        entry = {
            "weight": 1,
            "session": session,
            "creator": self.user,
            "holder": key,
            "grantedAt": rfc3339(self.clock.now()),
        }
        ops, _ = grant_patch(obj, [(slot, entry)])
        await self.client.store.patch(
            SEMAPHORE, self.namespace, self.name, ops, patch_type="json", subresource="status"
        )

    async def _renew(self, session: str) -> None:
        count = self.renewals.get(session, 0) + 1
        try:
            written = await self.client.store.patch(
                SESSION,
                self.namespace,
                session,
                [
                    {"op": "replace", "path": "/spec/renewCount", "value": count},
                    {
                        "op": "replace",
                        "path": "/spec/renewedAt",
                        "value": rfc3339(self.clock.now()),
                    },
                ],
                patch_type="json",
            )
        except NotFoundError:
            raise AssertionError(f"live session {session} was deleted") from None
        self.renewals[session] = count
        await self._cached(SESSION, written)

    @initialize()
    def a_dead_owner(self) -> None:
        """Every run starts with an owner that died holding a grant: its session ends as
        soon as enough time passes, whatever the rules drawn (a positive control)."""
        session = self.portal.call(self._open_session)
        self.last_renewal[session] = self.clock.monotonic()
        self.portal.call(self._grant, "dead", session)
        self.settle()
        self.session_of["dead"] = session

    @rule(data=st.data())
    def grant(self, data: st.DataObject) -> None:
        """A grant under a new session, or another grant of a live owner's session."""
        key = f"k{self.next}"
        self.next += 1
        if self.alive and data.draw(st.booleans(), label="shared session"):
            session = data.draw(st.sampled_from(sorted(self.alive)))
        else:
            session = self.portal.call(self._open_session)
            self.alive.add(session)
            self.last_renewal[session] = self.clock.monotonic()
        self.portal.call(self._grant, key, session)
        self.settle()
        self.session_of[key] = session

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(sorted(self.alive)))
        self.portal.call(self._renew, session)
        self.settle()
        self.last_renewal[session] = self.clock.monotonic()

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def die(self, data: st.DataObject) -> None:
        self.alive.discard(data.draw(st.sampled_from(sorted(self.alive))))

    @rule(seconds=st.sampled_from([1.0, 4.0, 9.9, 10.0, 14.0]))
    def time_passes(self, seconds: float) -> None:
        # Live owners renew every TTL/3, as their sessions do.
        step = TTL / 3
        while seconds > 0:
            dt = min(step, seconds)
            self.clock.advance(dt)
            seconds -= dt
            self.settle()
            for session in sorted(self.alive):
                if self.clock.monotonic() - self.last_renewal[session] >= step:
                    self.portal.call(self._renew, session)
                    self.settle()
                    self.last_renewal[session] = self.clock.monotonic()

    @invariant()
    def live_grants_stay_and_dead_ones_go_after_their_ttl(self) -> None:
        holders = self.holders()
        now = self.clock.monotonic()
        for key, session in self.session_of.items():
            if session in self.alive:
                assert key in holders, f"{key} of live session {session} reaped"
            elif key in holders:
                assert now - self.last_renewal[session] < TTL, f"{key} outlived its session"
            elif key not in self.reaped:
                self.reaped.add(key)
                type(self).reaps += 1
        assert set(holders) <= set(self.session_of), f"unknown grants: {holders}"


@pytest.fixture
def real_server_machine(kubeconfig: Path, namespace: str) -> type[RealServerReaper]:
    RealServerReaper.kubeconfig = kubeconfig
    RealServerReaper.namespace = namespace
    RealServerReaper.reaps = 0
    return RealServerReaper


def test_reaper_state_machine_on_the_real_server(
    real_server_machine: type[RealServerReaper], control_plane: ClusterHandle
) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        real_server_machine,
        # Derandomized: the same runs every time, so the positive control below is not luck.
        settings=settings(max_examples=6, stateful_step_count=10, deadline=None, derandomize=True),
    )
    assert real_server_machine.reaps > 0, "no run ever saw a dead session's grant reaped"

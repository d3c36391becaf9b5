"""A hypothesis state machine driving real Lease clients against the real API server.

Three clients (separate identities, HTTP sessions and watches) acquire, wait, release and
give up on one lease in random interleavings, while the test advances their clocks
(FakeClock, in lockstep) past renewal deadlines and TTLs. Renewals, watches and takeovers
run for real in the background. After every step:

* the server has at most one holder entry, carrying the last fencing token issued;
* tokens were granted in strictly increasing order;
* at most one client *believes* it holds (not released, its clock before its deadline),
  and if one does, the server's holder entry is that client's grant.

The machine runs in a worker thread and calls into the event loop (anyio.from_thread).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from konductor_sdk import Client, NotFoundError, WouldBlock
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import LEASE
from konductor_sdk.lease import HeldLease, Lease

MakeClient = Callable[..., Client]
TTL = 2
N = 3
_names = itertools.count()


class ServerLeaseMachine(RuleBasedStateMachine):
    clients: ClassVar[list[Client]] = []
    clocks: ClassVar[list[FakeClock]] = []
    tg: ClassVar[TaskGroup]

    def __init__(self) -> None:
        super().__init__()
        self.name = f"machine-{next(_names)}"
        self.leases = [Lease(self.name, ttl=TTL, client=c) for c in self.clients]
        self.held: list[HeldLease | None] = [None] * N
        self.waiting: list[anyio.CancelScope | None] = [None] * N
        self.done: list[anyio.Event | None] = [None] * N
        self.tokens: list[int] = []

    # -- helpers running in the event loop --------------------------------------------

    def _granted(self, i: int, held: HeldLease) -> None:
        assert not self.tokens or held.token > self.tokens[-1], (self.tokens, held.token)
        self.tokens.append(held.token)
        self.held[i] = held

    async def _wait(self, i: int, scope: anyio.CancelScope, done: anyio.Event) -> None:
        try:
            with scope:
                self._granted(i, await self.leases[i].acquire())
        finally:
            self.waiting[i] = None
            done.set()

    def _start_wait(self, i: int) -> None:
        scope, done = anyio.CancelScope(), anyio.Event()
        self.waiting[i], self.done[i] = scope, done
        self.tg.start_soon(self._wait, i, scope, done)

    async def _cancel_wait(self, i: int) -> None:
        scope, done = self.waiting[i], self.done[i]
        if scope is not None and done is not None:
            scope.cancel()
            with anyio.fail_after(30):
                await done.wait()

    async def _settle(self) -> None:
        # Let every waiter look at the state again (with the clocks as they are now).
        before = [lease.statistics().evaluations for lease in self.leases]
        with anyio.fail_after(30):
            for i in range(N):
                while self._unsettled(i, before[i]):  # noqa: ASYNC110 - no event for this
                    await anyio.sleep(0.02)

    def _unsettled(self, i: int, evaluations: int) -> bool:
        waiting = self.waiting[i] is not None
        return waiting and self.leases[i].statistics().evaluations <= evaluations

    def _check(self) -> dict[str, Any]:
        believers = [
            i
            for i, h in enumerate(self.held)
            if h is not None and not h._released and self.clocks[i].monotonic() < h.deadline
        ]
        grants = [(h.key, h.token) if h else None for h in self.held]
        return {"believers": believers, "grants": grants, "last": self.tokens[-1:]}

    # -- rules (worker thread) ------------------------------------------------------

    def idle(self, i: int) -> bool:
        return self.held[i] is None and self.waiting[i] is None

    @initialize()
    def everyone_wants_it(self) -> None:
        # Start every example contended; hypothesis then explores from there.
        for i in range(N):
            self.want_it(i, blocking=True)

    @rule(i=st.integers(0, N - 1), blocking=st.booleans())
    def want_it(self, i: int, blocking: bool) -> None:
        if not self.idle(i):
            return
        if blocking:
            anyio.from_thread.run_sync(self._start_wait, i)
            return
        try:
            held = anyio.from_thread.run(self.leases[i].acquire_nowait)
        except WouldBlock:
            return
        anyio.from_thread.run_sync(self._granted, i, held)

    @rule(i=st.integers(0, N - 1))
    def give_up_waiting(self, i: int) -> None:
        anyio.from_thread.run(self._cancel_wait, i)

    @rule(i=st.integers(0, N - 1))
    def release(self, i: int) -> None:
        held = self.held[i]
        if held is not None:
            anyio.from_thread.run(held.release)
            self.held[i] = None

    @rule(dt=st.sampled_from([0.5, 1.0, TTL - 0.1, TTL + 0.5]))
    def time_passes(self, dt: float) -> None:
        for clock in self.clocks:
            anyio.from_thread.run_sync(clock.advance, dt)
        anyio.from_thread.run(self._settle)

    @invariant()
    def one_believer_and_it_is_the_servers_holder(self) -> None:
        # Only race-free facts: waiters may be completing grants in the background while
        # this runs, but nobody can take a believer's grant away (its deadline is on the
        # fake clocks, which only this thread advances) and only this thread releases.
        seen = anyio.from_thread.run_sync(self._check)
        assert len(seen["believers"]) <= 1, seen
        c = self.clients[0]
        try:
            obj = anyio.from_thread.run(c.store.get, LEASE, c.namespace, self.name)
        except NotFoundError:
            assert not seen["believers"]
            return
        holders = obj.status.get("holders") or {}
        assert len(holders) <= 1
        for entry in holders.values():
            assert entry["token"] == obj.status["fencingToken"]
        assert obj.status.get("fencingToken", 0) >= max(seen["last"], default=0)
        if seen["believers"]:
            key, token = seen["grants"][seen["believers"][0]]
            assert key in holders, f"a client believes it holds {key}; server: {holders}"
            assert holders[key]["token"] == token

    def teardown(self) -> None:
        for i in range(N):
            anyio.from_thread.run(self._cancel_wait, i)
            held = self.held[i]
            if held is not None:
                anyio.from_thread.run(held.release)


@pytest.mark.anyio
async def test_lease_state_machine_on_the_server(make_client: MakeClient) -> None:
    clocks = [FakeClock() for _ in range(N)]
    clients = [make_client(f"machine-{i}", clock=clocks[i]) for i in range(N)]
    for c in clients:
        await c.connect()
    ServerLeaseMachine.clients, ServerLeaseMachine.clocks = clients, clocks
    async with anyio.create_task_group() as tg:
        ServerLeaseMachine.tg = tg
        await anyio.to_thread.run_sync(
            lambda: run_state_machine_as_test(
                ServerLeaseMachine,
                settings=settings(
                    max_examples=8,
                    stateful_step_count=30,
                    deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
        )
        tg.cancel_scope.cancel()

"""Hypothesis state machine on the real server: acquire (nowait and waiting), release,
renew, reap (as the operator does), limit changes, against a model of the queue.

Runs through the blocking facade (the machine is synchronous), one step at a time, and
compares the model with a fresh read of the object after every step.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as hs
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from konductor_sdk import Client, Identity, WouldBlock
from konductor_sdk._kernel.objects import SEMAPHORE
from konductor_sdk.sync import _portal
from konductor_sdk.sync.semaphore import Permit, Semaphore

pytestmark = pytest.mark.anyio
_names = itertools.count()


@attrs.define
class Req:
    key: str
    weight: int
    priority: int
    ticket: int


class Model:
    def __init__(self, permits: int) -> None:
        self.permits = permits
        self.queue: list[Req] = []
        self.held: dict[str, int] = {}

    def settle(self) -> list[str]:
        granted = []
        for r in sorted(self.queue, key=lambda r: (-r.priority, r.ticket)):
            if r.weight > self.permits:
                continue
            if sum(self.held.values()) + r.weight > self.permits:
                break
            self.queue.remove(r)
            self.held[r.key] = r.weight
            granted.append(r.key)
        return granted


class ServerMachine(RuleBasedStateMachine):
    client: Client
    holders_ = Bundle("holders")

    @initialize(permits=hs.integers(1, 4))
    def setup(self, permits: int) -> None:
        self.name = f"m{next(_names)}"
        self.sem = Semaphore(self.name, permits=permits, client=self.client, ttl=30)
        self.sem.create()
        self.model = Model(permits)
        self.ticket = 0
        self.pending: dict[str, Future[Any]] = {}  # waiter key -> future of its acquire
        self.permits: dict[str, Permit] = {}
        self.max_token = 0

    def _obj(self) -> Any:
        return _portal.run(self.client.store.get, SEMAPHORE, self.client.namespace, self.name)

    def _collect(self, keys: list[str]) -> None:
        """The model granted ``keys``: their waiting acquires must now complete."""
        for key in keys:
            if key in self.pending:
                permit = self.pending.pop(key).result(timeout=60)
                self.permits[key] = Permit._wrap(permit)

    @rule(target=holders_, weight=hs.integers(1, 3), priority=hs.integers(0, 2))
    def acquire_nowait(self, weight: int, priority: int) -> str:
        trial = Model(self.model.permits)
        trial.queue = list(self.model.queue)
        trial.held = dict(self.model.held)
        trial.queue.append(Req("new", weight, priority, self.ticket))
        expect = "new" in trial.settle()
        if weight > self.model.permits:
            return "nothing"
        try:
            permit = self.sem.acquire_nowait(weight=weight, priority=priority)
        except WouldBlock:
            assert not expect
            return "nothing"
        assert expect
        self.ticket += 1
        self.model.held[permit.key] = weight
        self.permits[permit.key] = permit
        assert permit.token > self.max_token
        self.max_token = permit.token
        return permit.key

    @rule(target=holders_, weight=hs.integers(1, 3), priority=hs.integers(0, 2))
    def acquire_waiting(self, weight: int, priority: int) -> str:
        if weight > self.model.permits:
            return "nothing"
        before = self._obj()
        known = set(before.status.get("waiters") or {}) | set(before.status.get("holders") or {})
        future = _portal.portal().start_task_soon(
            lambda: self.sem._async.acquire(weight=weight, priority=priority)
        )
        key = _portal.run(self._new_key, known)
        self.pending[key] = future
        self.model.queue.append(Req(key, weight, priority, self.ticket))
        self.ticket += 1
        self._collect(self.model.settle())
        return key

    async def _new_key(self, known: set[str]) -> str:
        """Wait (on the watch) for the one entry that is not in ``known``."""
        watch = await self.client.watch(SEMAPHORE, self.client.namespace)
        with anyio.fail_after(60):
            while True:
                changed = watch.next_change(self.name)
                st = watch.get(self.name).status  # type: ignore[union-attr]
                new = (set(st.get("waiters") or {}) | set(st.get("holders") or {})) - known
                if new:
                    (key,) = new
                    return str(key)
                await changed.wait()

    @rule(key=consumes(holders_))
    def release(self, key: str) -> None:
        permit = self.permits.pop(key, None)
        if permit is None:
            return  # still waiting (or never granted): released when the test ends
        permit.release()
        del self.model.held[key]
        self._collect(self.model.settle())

    @rule(key=consumes(holders_))
    def reap(self, key: str) -> None:
        # What the operator does to an expired holder: remove it, settle.
        if key not in self.model.held:
            return
        assert self.sem.force_release(key) == (key,)
        del self.model.held[key]
        self.permits.pop(key)
        self._collect(self.model.settle())

    @rule(key=holders_)
    def renew(self, key: str) -> None:
        permit = self.permits.get(key)
        if permit is None or permit.renewal is None:
            return
        before = self._obj().status["holders"][key]["renewCount"]
        _portal.run(permit.renewal.renew_once)
        assert self._obj().status["holders"][key]["renewCount"] >= before + 1

    @rule(permits=hs.integers(1, 5))
    def set_limit(self, permits: int) -> None:
        self.sem.set_permits(permits)
        self.model.permits = permits
        self._collect(self.model.settle())

    @invariant()
    def server_matches_model(self) -> None:
        if not hasattr(self, "model"):
            return
        obj = self._obj()
        holders = obj.status.get("holders") or {}
        assert set(holders) == set(self.model.held)
        assert set(obj.status.get("waiters") or {}) == {r.key for r in self.model.queue}
        tokens = sorted(int(e["token"]) for e in holders.values())
        if tokens:
            assert tokens[-1] <= obj.status["fencingToken"]
        for key, e in holders.items():
            if key in self.permits:
                assert int(e["token"]) == self.permits[key].token

    def teardown(self) -> None:
        if hasattr(self, "sem"):
            for future in self.pending.values():
                future.cancel()
            self.sem.delete()


async def test_semaphore_against_a_model_on_the_server(kubeconfig: Path, namespace: str) -> None:
    def run() -> None:
        client = Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("machine"))
        ServerMachine.client = client
        try:
            run_state_machine_as_test(
                ServerMachine,
                settings=settings(
                    max_examples=15,
                    stateful_step_count=25,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    # Every step is a round trip; a failure prints its steps unshrunk.
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                ),
            )
        finally:
            _portal.run(client.aclose)

    await anyio.to_thread.run_sync(run)

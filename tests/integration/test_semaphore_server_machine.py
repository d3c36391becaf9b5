"""Hypothesis state machine on the real server: acquire (nowait, uncontended, queued),
release, force-release (as the operator reaps), limit changes, against a model of the
queue and the slots.

Runs through the blocking facade (the machine is synchronous), one step at a time, and
compares the model with a fresh read of the object after every step: the same grants on
the same slots with the same tokens.
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
from konductor_sdk._kernel.claims import order_key
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE
from konductor_sdk.sync import _portal
from konductor_sdk.sync.semaphore import Permit, Semaphore
from tests.integration._semaphore_helpers import fitting_prefix

pytestmark = pytest.mark.anyio
_names = itertools.count()


@attrs.define
class Req:
    claim: str
    weight: int
    priority: int
    rv: int


class ServerMachine(RuleBasedStateMachine):
    client: Client
    holders_ = Bundle("holders")

    @initialize(permits=hs.integers(1, 4))
    def setup(self, permits: int) -> None:
        self.name = f"m{next(_names)}"
        self.sem = Semaphore(self.name, permits=permits, client=self.client, ttl=30)
        self.sem.create()
        self.limit = permits
        self.queue: list[Req] = []
        self.held: dict[str, tuple[int, int]] = {}  # permit key -> (slot, weight)
        self.pending: dict[str, Future[Any]] = {}  # claim -> future of its acquire
        self.permits: dict[str, Permit] = {}
        self.max_token = 0
        self.seen_claims: set[str] = set()
        self.added: dict[str, Any] = {}  # every claim of this semaphore the watch saw added
        _portal.run(self._listen)

    async def _listen(self) -> None:
        # A claim that can be granted at once lives for a few milliseconds (created,
        # granted, deleted): only a watch is sure to see it, a list may fall between.
        watch = await self.client.watch(CLAIM, self.client.namespace)
        self.grew = anyio.Event()

        def listener(etype: str, obj: Any) -> None:
            target = obj.spec.get("target") or {}
            if etype == "ADDED" and target == {"kind": SEMAPHORE.kind, "name": self.name}:
                self.added[obj.name] = obj
                self.grew.set()
                self.grew = anyio.Event()

        self.unlisten = watch.add_listener(listener)

    def _obj(self) -> Any:
        return _portal.run(self.client.store.get, SEMAPHORE, self.client.namespace, self.name)

    def _ordered(self) -> list[Req]:
        return sorted(self.queue, key=lambda r: (-r.priority, r.rv))

    def _grant(self, key: str, permit: Permit, slot: int | None = None) -> None:
        assert permit.token > self.max_token
        self.max_token = permit.token
        first = permit.slot
        if slot is not None:
            assert first == slot, (permit, slot)
        self.held[key] = (first, permit.weight)
        self.permits[key] = permit

    def _settle(self) -> None:
        """Grant what the model says fits; those acquires must now complete."""
        order = [(r.claim, r.weight) for r in self._ordered()]
        for claim, slot in fitting_prefix(self.limit, self.held, order):
            permit = Permit._wrap(self.pending.pop(claim).result(timeout=60))
            self.queue = [r for r in self.queue if r.claim != claim]
            self._grant(permit.key, permit, slot)

    @rule(target=holders_, weight=hs.integers(1, 3), priority=hs.integers(0, 2))
    def acquire_nowait(self, weight: int, priority: int) -> str:
        if weight > self.limit:
            return "nothing"
        fits = fitting_prefix(self.limit, self.held, [("new", weight)])
        expect = not self.queue and bool(fits)
        try:
            permit = self.sem.acquire_nowait(weight=weight, priority=priority)
        except WouldBlock:
            assert not expect
            return "nothing"
        assert expect
        self._grant(permit.key, permit, fits[0][1])
        return permit.key

    @rule(target=holders_, weight=hs.integers(1, 3), priority=hs.integers(0, 2))
    def acquire(self, weight: int, priority: int) -> str:
        if weight > self.limit:
            return "nothing"
        fits = fitting_prefix(self.limit, self.held, [("new", weight)])
        direct = not self.queue and bool(fits)
        future = _portal.portal().start_task_soon(
            lambda: self.sem._async.acquire(weight=weight, priority=priority)
        )
        if direct:  # uncontended: granted at once, no claim
            permit = Permit._wrap(future.result(timeout=60))
            self._grant(permit.key, permit, fits[0][1])
            return permit.key
        claim = _portal.run(self._new_claim, set(self.seen_claims))
        self.seen_claims.add(claim.name)
        self.pending[claim.name] = future
        self.queue.append(Req(claim.name, weight, priority, order_key(claim)[1]))
        self._settle()
        return claim.name

    async def _new_claim(self, known: set[str]) -> Any:
        """Wait for the one claim of this semaphore not seen before."""
        with anyio.fail_after(60):
            while True:
                grew = self.grew
                new = [c for name, c in self.added.items() if name not in known]
                if new:
                    (claim,) = new
                    return claim
                await grew.wait()

    @rule(key=consumes(holders_))
    def release(self, key: str) -> None:
        permit = self.permits.pop(key, None)
        if permit is None:
            return  # still waiting (or never granted): cancelled when the test ends
        permit.release()
        del self.held[key]
        self._settle()

    @rule(key=consumes(holders_))
    def reap(self, key: str) -> None:
        # What the operator does when a holder's session ends: remove its grant.
        if key not in self.held:
            return
        assert self.sem.force_release(key) == (key,)
        del self.held[key]
        self.permits.pop(key)
        self._settle()

    @rule(permits=hs.integers(1, 5))
    def set_limit(self, permits: int) -> None:
        self.sem.set_permits(permits)
        self.limit = permits
        self._settle()

    @invariant()
    def server_matches_model(self) -> None:
        if not hasattr(self, "held"):
            return
        obj = self._obj()
        holders = obj.status.get("holders") or {}
        assert {f"{k}#{e['token']}" for k, e in holders.items()} == set(self.held)
        if holders:
            assert max(int(e["token"]) for e in holders.values()) <= obj.status["fencingToken"]

    def teardown(self) -> None:
        if hasattr(self, "unlisten"):
            self.unlisten()
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

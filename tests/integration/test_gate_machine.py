"""Hypothesis state machine on the real server: two clients mark external conditions of a
nested gate (one at a time and concurrently), the spec's latch is toggled, waiters come and
go; after every step a fresh read must match an independent model, and no waiter may have
returned unless the model says the gate opened. No operator runs: the gate is judged by
readers from its conditions alone.

Runs through the blocking facade (the machine is synchronous), one step at a time.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Future
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as hs
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from konductor_sdk import Identity
from konductor_sdk._kernel.objects import GATE, KObject
from konductor_sdk._machines.gate import judge
from konductor_sdk.gate import Condition, GateStatus
from konductor_sdk.sync import Client, _portal
from konductor_sdk.sync.gate import Gate

pytestmark = pytest.mark.anyio
_names = itertools.count()
LEAVES = ("x", "y", "z", "w")


def model_open(met: dict[str, bool]) -> bool:
    # x AND (y OR (z AND w)), spelled independently of the tree evaluator
    return met["x"] and (met["y"] or (met["z"] and met["w"]))


class GateServerMachine(RuleBasedStateMachine):
    clients: tuple[Client, Client]

    @initialize(latch=hs.booleans())
    def setup(self, latch: bool) -> None:
        self.name = f"gm{next(_names)}"
        self.gates = [Gate(self.name, client=c) for c in self.clients]
        self.gates[0].create(
            [
                Condition.external("x"),
                Condition.any(
                    "either",
                    Condition.external("y"),
                    Condition.all("both", *map(Condition.external, ("z", "w"))),
                ),
            ],
            latch=latch,
        )
        self.latch = latch
        self.met = dict.fromkeys(LEAVES, False)
        self.latched_open = False
        self.open_count = 0
        self.waiters: list[Future[GateStatus]] = []

    def _obj(self) -> KObject:
        client = self.clients[0]
        return _portal.run(client.store.get, GATE, client.namespace, self.name)

    def _expect_open(self) -> bool:
        # No operator runs here, and marks write only their own condition: nobody records
        # an opening, so a latch has nothing to hold on to and the gate follows its
        # conditions (the operator records openings: tests/e2e/test_gate_operator.py).
        now = model_open(self.met)
        expected = now
        if expected and not self.latched_open:
            self.open_count += 1
        self.latched_open = expected
        return expected

    @rule(name=hs.sampled_from(LEAVES), met=hs.booleans(), who=hs.integers(0, 1))
    def mark(self, name: str, met: bool, who: int) -> None:
        self.gates[who].mark(name, met=met, message=f"{who}")
        self.met[name] = met
        self._check()

    @rule(names=hs.lists(hs.sampled_from(LEAVES), min_size=2, max_size=2, unique=True))
    def concurrent_marks(self, names: list[str]) -> None:
        futures = [
            _portal.portal().start_task_soon(g._async.mark, n)
            for g, n in zip(self.gates, names, strict=True)
        ]
        for f in futures:
            f.result(timeout=60)
        for n in names:
            self.met[n] = True
        self._check()

    @rule()
    def toggle_latch(self) -> None:
        obj = self._obj()
        spec = {**obj.spec, "latch": not self.latch}
        _portal.run(self.clients[0].store.replace, GATE, {**obj.raw, "spec": spec})
        self.latch = not self.latch
        self.latched_open = False  # a new spec is judged afresh
        self._check()

    @rule()
    def start_waiter(self) -> None:
        gate = self.gates[len(self.waiters) % 2]
        self.waiters.append(_portal.portal().start_task_soon(gate._async.wait))

    def _check(self) -> None:
        expected = self._expect_open()
        s = judge(self._obj())
        assert s["phase"] == ("Open" if expected else "Waiting"), (self.met, self.latch, s)
        marked = {e["name"]: e["met"] for e in s.get("conditions") or ()}
        assert all(marked.get(n, False) is m for n, m in self.met.items()), (marked, self.met)

    @invariant()
    def waiters_return_only_when_open(self) -> None:
        if not hasattr(self, "met"):
            return
        if self.latched_open:
            for f in self.waiters:
                assert f.result(timeout=60).open
            self.waiters.clear()
        else:
            assert not any(f.done() for f in self.waiters), "a waiter returned while closed"

    def teardown(self) -> None:
        for f in getattr(self, "waiters", ()):
            f.cancel()


async def test_gate_against_a_model_on_the_server(kubeconfig: Path, namespace: str) -> None:
    def run() -> None:
        clients = tuple(
            Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(f"m{i}"))
            for i in range(2)
        )
        GateServerMachine.clients = clients  # type: ignore[assignment]
        try:
            run_state_machine_as_test(
                GateServerMachine,
                settings=settings(
                    max_examples=10,
                    stateful_step_count=20,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    # Every step is a round trip; a failure prints its steps unshrunk.
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                ),
            )
        finally:
            for c in clients:
                c.close()

    await anyio.to_thread.run_sync(run)

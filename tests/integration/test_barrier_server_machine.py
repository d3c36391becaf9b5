"""A hypothesis state machine driving real parties (separate clients) against the server.

Parties arrive, look, leave or get cancelled while waiting; an admin resets, changes
``expected`` and reaps arrivals like the operator. After every step the stored object must
be consistent (normalized, ranks 0..n-1 when open, each generation concluded once), and
every party must be told an outcome that agrees with what the object recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from konductor_sdk import BarrierFailed, Client, Identity
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._machines import barrier as bs
from konductor_sdk.barrier import Barrier
from konductor_sdk.sync import _portal
from konductor_sdk.testing import ClusterHandle

PARTIES = 4
_names = itertools.count()


class Machine(RuleBasedStateMachine):
    clients: list[Client]
    admin: Client

    def __init__(self) -> None:
        super().__init__()
        self.name = f"sm-{next(_names)}"
        self.barriers = [
            Barrier(self.name, expected=3, client=self.clients[i], party=f"p{i}")
            for i in range(PARTIES)
        ]
        self.joined: dict[int, int] = {}
        self.concluded: dict[int, str] = {}
        self.told: dict[tuple[int, int], Any] = {}

    def _status(self) -> KObject | None:
        async def get() -> KObject | None:
            await self.admin.connect()
            try:
                return await self.admin.store.get(BARRIER, self.admin.namespace, self.name)
            except Exception:
                return None

        return _portal.run(get)

    @rule(i=st.integers(0, PARTIES - 1))
    def arrive(self, i: int) -> None:
        if i not in self.joined:
            self.joined[i] = _portal.run(self.barriers[i].arrive)

    @rule(i=st.integers(0, PARTIES - 1))
    def look(self, i: int) -> None:
        generation = self.joined.get(i)
        obj = self._status()
        if generation is None or obj is None:
            return
        out = bs.outcome(obj.status, key=f"p{i}", generation=generation)
        if out.state == bs.PENDING:
            return

        async def wait() -> Any:
            with anyio.fail_after(20):  # it concluded: the answer must come at once
                try:
                    return await self.barriers[i].wait_open()
                except BarrierFailed as exc:
                    return exc

        result = _portal.run(wait)
        del self.joined[i]
        if out.state == bs.OPENED:
            assert result == out.index
        else:
            assert isinstance(result, BarrierFailed), (out, result)
        self.told[(i, generation)] = result

    @rule(i=st.integers(0, PARTIES - 1))
    def leave(self, i: int) -> None:
        if i in self.joined:
            _portal.run(self.barriers[i].leave)
            del self.joined[i]

    @rule(i=st.integers(0, PARTIES - 1))
    def cancel_a_wait(self, i: int) -> None:
        if i not in self.joined:
            return

        async def impatient() -> None:
            with anyio.move_on_after(0.05):
                with contextlib.suppress(BarrierFailed):
                    await self.barriers[i].wait_open()

        _portal.run(impatient)
        if self.barriers[i].statistics().generation is None:
            del self.joined[i]  # it finished (opened, failed or was cancelled)

    @rule()
    def reset(self) -> None:
        _portal.run(Barrier(self.name, expected=None, client=self.admin).reset)

    @rule(n=st.integers(1, 5))
    def set_expected(self, n: int) -> None:
        if self._status() is not None:
            _portal.run(Barrier(self.name, expected=None, client=self.admin).set_expected, n)

    @rule(i=st.integers(0, PARTIES - 1))
    def operator_reaps(self, i: int) -> None:
        def reap(obj: KObject) -> dict[str, Any] | None:
            status = bs.normalize(obj.spec, obj.status)
            if f"p{i}" not in status["arrivals"]:
                return None
            del status["arrivals"][f"p{i}"]
            return bs.normalize(obj.spec, status)

        if self._status() is not None:
            _portal.run(update_status, self.admin, BARRIER, self.admin.namespace, self.name, reap)

    @invariant()
    def the_object_is_consistent(self) -> None:
        obj = self._status()
        if obj is None:
            return
        s = obj.status
        if s.get("phase") == bs.OPEN:
            parties = s["parties"]
            live = [p for p in parties if p in s["arrivals"]]
            assert all(s["arrivals"][p]["index"] == parties.index(p) for p in live)
        for record in s.get("history", ()):
            seen = self.concluded.setdefault(record["generation"], record["phase"])
            assert seen == record["phase"], "a generation concluded twice"
        if s.get("phase") == bs.WAITING:
            indices = [e["index"] for e in s["arrivals"].values()]
            assert len(indices) == len(set(indices))

    def teardown(self) -> None:
        for barrier in self.barriers:
            if barrier.statistics().generation is not None:
                _portal.run(barrier.leave)


@pytest.fixture
def server_clients(control_plane: ClusterHandle) -> Iterator[tuple[list[Client], Client]]:
    namespace = control_plane.create_namespace(f"barrier-sm-{secrets.token_hex(3)}")
    path = control_plane.kubeconfig_path
    clients = [
        Client(kubeconfig=path, namespace=namespace, identity=Identity(f"party-{i}"))
        for i in range(PARTIES)
    ]
    admin = Client(kubeconfig=path, namespace=namespace, identity=Identity("admin"))
    yield clients, admin
    for client in [*clients, admin]:
        _portal.run(client.aclose)


def test_barrier_state_machine_on_the_server(server_clients: tuple[list[Client], Client]) -> None:
    Machine.clients, Machine.admin = server_clients
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

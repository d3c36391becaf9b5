"""A hypothesis state machine driving real parties (separate clients) against the server.

Parties arrive, look, leave or get cancelled while waiting; an admin resets, changes
``expected`` and withdraws a party's arrival claim like the operator does when its session
dies. After every step the stored object must be consistent (counters agree, each
generation concluded once), and every party must be told an outcome that agrees with what
the object recorded.
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
from konductor_sdk._kernel.objects import BARRIER, CLAIM, KObject
from konductor_sdk._machines import barrier as bs
from konductor_sdk._machines import barrier_outcome as bo
from konductor_sdk._machines import barrier_ranges as ranges
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
        self.index: dict[int, int] = {}
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
            index = self.barriers[i].statistics().index
            assert index is not None
            self.index[i] = index

    @rule(i=st.integers(0, PARTIES - 1))
    def look(self, i: int) -> None:
        generation = self.joined.get(i)
        obj = self._status()
        if generation is None or obj is None:
            return
        out = bo.outcome(obj.status, generation=generation, index=self.index[i])
        if out.state == bo.PENDING:
            return

        async def wait() -> Any:
            with anyio.fail_after(20):  # it concluded: the answer must come at once
                try:
                    return await self.barriers[i].wait_open()
                except BarrierFailed as exc:
                    return exc

        result = _portal.run(wait)
        del self.joined[i]
        if out.state == bo.OPENED:
            assert result == out.rank
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
    def operator_withdraws_a_session(self, i: int) -> None:
        """What the operator does when party i's session dies: withdraw its claims."""
        generation = self.joined.get(i)
        if generation is None:
            return

        async def claims() -> list[KObject]:
            listed = await self.admin.store.list(CLAIM, self.admin.namespace)
            return [
                c
                for c in listed.items
                if c.spec["target"]["name"] == self.name and f"p{i}" in c.spec["parties"]
            ]

        mine = _portal.run(claims)
        if not mine:
            return  # not created yet (its arrival opened the generation)
        dead = frozenset(c.spec["session"] for c in mine)

        def drop(obj: KObject) -> dict[str, Any] | None:
            return bs.drop_sessions(obj, dead, mine)

        if self._status() is not None:
            _portal.run(update_status, self.admin, BARRIER, self.admin.namespace, self.name, drop)

    @invariant()
    def the_object_is_consistent(self) -> None:
        obj = self._status()
        if obj is None:
            return
        s = bs.normalize(obj.spec, obj.status)
        assert s["arrived"] == sum(s["arrivedBy"].values())
        assert s["arrived"] == s["nextIndex"] - ranges.total(s["departed"])
        for record in s.get("history", ()):
            seen = self.concluded.setdefault(record["generation"], record["phase"])
            assert seen == record["phase"], "a generation concluded twice"

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

"""Faults put into the test suite (issue 13.6): frozen holders, waiters, leaders and etcd,
and a kube-apiserver restart, against separate processes and the operator.

Every child process reports its critical-section bodies to a shared event log and writes
to a fenced resource (``_fault_child.py``); the checks (``_fault_support.violations``)
judge those records and the server's final state only:

* no body starts on an expired grant, and none acts after its deadline;
* no two bodies of a one-permit semaphore (or two leaders) overlap, tokens increase;
* fencing rejects every stale write, and only those;
* nothing leaks: once every child is gone and the operator had its TTL, the object has no
  grant left and no Claim (waiter) names it.

The server's side is read in object model v2 (design.md): a participant's grant is the
``status.holders`` entry whose ``holder`` is its identity, its place in the queue is its
Claim (``spec.holder``), and its liveness is the Session either names (``renewCount``).

Freezes are SIGSTOP/SIGCONT. A holder or leader stops itself at the top of its body's next
step when asked (``Scene.pause``), so that what runs first after SIGCONT is the body's own
check of its grant, not whichever task the signal happened to interrupt; a waiter is
stopped from outside while it waits. Freezes last twice the TTL, except where a test
thaws at a point it names (after a deadline, before a reap). Every wait is for an event (a
line in the log, a change on the watch, a process exit), bounded generously; no assertion
depends on how long something took. Faults of the control plane itself use the
``isolated_control_plane`` fixture, never the shared control plane.

Each scene prints its totals (``FAULT-SUMMARY``, shown with ``-s``): bodies started, writes
the fence accepted and refused, violations, faults put in.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from _fault_support import (
    Scene,
    children_output,
    describe,
    lease_holders,
    renewed,
    summary,
    until_candidate,
    until_lease,
    until_semaphore,
    violations,
)
from _operator_support import OperatorProcess, ready_leader, start_operator, wait_until

from konductor_sdk import Client, Semaphore
from konductor_sdk.testing import ClusterHandle, LocalControlPlane

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="freezes through /proc"),
]

TTL = 2  # seconds; every freeze lasts at least 2 * TTL
LEASE = 3  # a leader's lease duration, seconds
# Bounds for waits that only fail a broken run: reaping takes one TTL after the operator
# last saw a renewal, plus its reaction time, on a machine shared with other tests.
SOON = 30.0
REAPED = 6 * TTL + 30.0


def _start_operator(kubeconfig: Path, namespace: str, log_dir: Path) -> OperatorProcess:
    # One replica without election: nothing for a freeze of etcd to take away from it.
    op = start_operator(kubeconfig, namespace, log_dir, extra=("--no-leader-elect",))
    try:
        wait_until(lambda: ready_leader(op), timeout=60, what="operator ready", op=op)
    except BaseException:
        op.stop()
        raise
    return op


@pytest.fixture(scope="module")
def fault_namespace(control_plane: ClusterHandle) -> Iterator[str]:
    name = control_plane.create_namespace(f"faults-{secrets.token_hex(3)}")
    yield name
    control_plane.rest().request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def operator(
    control_plane: ClusterHandle, fault_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = _start_operator(
        control_plane.kubeconfig_path, fault_namespace, tmp_path_factory.mktemp("operator")
    )
    yield op
    op.stop()


@asynccontextmanager
async def _scene(kubeconfig: Path, namespace: str, directory: Path) -> AsyncIterator[Scene]:
    scene = Scene(kubeconfig, namespace, directory)
    try:
        yield scene
    finally:
        scene.kill_all()
        # Captured output: pytest shows it with a failure, and only then.
        print(describe(scene))
        print("\n".join(children_output(scene)))
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        print("FAULT-SUMMARY", json.dumps({"test": test, **summary(scene)}))


@pytest.fixture
async def scene(
    control_plane: ClusterHandle,
    fault_namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> AsyncIterator[Scene]:
    async with _scene(control_plane.kubeconfig_path, fault_namespace, tmp_path) as s:
        yield s
    assert operator.alive(), operator.log_tail()


@pytest.fixture
async def observer(control_plane: ClusterHandle, fault_namespace: str) -> AsyncIterator[Client]:
    """The test's own client: creates the objects, watches them. Never a holder."""
    async with Client(kubeconfig=control_plane.kubeconfig_path, namespace=fault_namespace) as c:
        yield c


async def _semaphore(client: Client, name: str) -> None:
    await Semaphore(name, permits=1, client=client).create()


async def _nothing_left(client: Client, name: str) -> None:
    await until_semaphore(client, name, lambda s: s.empty, within=REAPED)


async def _until(moment: float) -> None:
    """Let a fault go on until ``moment`` (monotonic): the fault's length, not a wait for
    something to happen."""
    await anyio.sleep(max(0.0, moment - time.monotonic()))


async def test_a_waiter_thawed_after_its_session_expired_does_not_start_on_a_grant(
    scene: Scene, observer: Client
) -> None:
    # The permit frees up while the only waiter is frozen; nobody grants for it (only a
    # waiter's own process writes its grant), so it is thawed just past its session's
    # deadline with the permit free: whatever it writes then, it must not enter its body
    # on a session whose deadline has passed (design.md), but queue again and be served.
    name = "expired-grant"
    await _semaphore(observer, name)
    scene.holder("a", name, ttl=TTL, release=True)
    await scene.event("a", "start", within=SOON)
    b = scene.holder("b", name, ttl=TTL, writes=5)
    await until_semaphore(observer, name, lambda s: s.waiting("b"), within=SOON)
    # b sent its last renewal before `renewal`: its deadline is before renewal + TTL.
    renewal = await renewed(observer, name, "b", within=SOON)
    b.freeze()
    # Half a TTL later, well before the operator may reap b's session, a releases.
    await _until(renewal + TTL / 2)
    scene.release("a")
    await until_semaphore(observer, name, lambda s: s.grant("a") is None, within=SOON)
    # b is thawed just after its deadline (at most TTL minus the 0.2 s safety margin after
    # the renewal seen), before the operator (one TTL after it saw that renewal) reaps it.
    await _until(renewal + TTL - 0.15)
    b.thaw()
    for child in scene.children:
        await child.exited(within=REAPED)
    await _nothing_left(observer, name)
    assert violations(scene) == [], describe(scene)
    assert [e["who"] for e in scene.events(kind="start")] == ["a", "b"], describe(scene)


async def test_a_waiter_frozen_until_its_claim_was_reaped_and_the_permit_given_away_waits_again(
    scene: Scene, observer: Client
) -> None:
    # The sequence of issue 13.1 on object model v2: a frozen waiter's session expires, the
    # operator reaps it and its claim, and the permit goes to another process before the
    # waiter is thawed.
    name = "regranted"
    await _semaphore(observer, name)
    scene.holder("a", name, ttl=TTL, release=True)
    await scene.event("a", "start", within=SOON)
    b = scene.holder("b", name, ttl=TTL, writes=5)
    await until_semaphore(observer, name, lambda s: s.waiting("b"), within=SOON)
    frozen_at = b.freeze()
    scene.release("a")  # nobody writes a grant for the frozen b...
    await until_semaphore(observer, name, lambda s: s.grant("a") is None, within=SOON)
    # ...whose session nobody renews: the operator reaps it and b's claim after its TTL,
    await until_semaphore(observer, name, lambda s: s.claim("b") is None, within=REAPED)
    # and the only permit goes to somebody else.
    scene.holder("c", name, ttl=TTL, writes=5)
    await scene.event("c", "start", within=SOON)
    await _until(frozen_at + 2 * TTL)
    b.thaw()
    for child in scene.children:
        await child.exited(within=REAPED)
    await _nothing_left(observer, name)
    assert violations(scene) == [], describe(scene)
    # b queued again and was served after c, with a grant of its own.
    assert [e["who"] for e in scene.events(kind="start")] == ["a", "c", "b"], describe(scene)


async def test_a_holder_frozen_past_its_ttl_does_not_act_on_its_lost_permit(
    scene: Scene, observer: Client
) -> None:
    name = "frozen-holder"
    await _semaphore(observer, name)
    a = scene.holder("a", name, ttl=TTL, release=True)
    await scene.event("a", "write", within=SOON)
    frozen_at = await scene.pause(a)  # stopped right before its next check of permit.lost
    scene.holder("b", name, ttl=TTL, release=True)
    # The operator reaps a's session and grant after its TTL; b gets the permit and writes.
    await scene.event("b", "start", within=REAPED)
    await scene.accepted_write("b", within=SOON)
    await _until(frozen_at + 2 * TTL)
    a.thaw()
    await scene.event("a", "end", within=SOON)
    scene.release("b")
    for child in scene.children:
        await child.exited(within=SOON)
    await _nothing_left(observer, name)
    assert violations(scene) == [], describe(scene)
    assert scene.events("a", "permit-lost")  # told, when its `async with` ended
    assert [e["token"] for e in scene.events(kind="start")] == [1, 2]


async def test_a_leader_frozen_past_its_lease_does_not_act_after_a_new_leader_started(
    scene: Scene, observer: Client
) -> None:
    name = "frozen-leader"
    timing = (f"--lease-duration={LEASE}", "--renew-deadline=2", "--retry-period=0.5")
    a = scene.spawn("leader", "a", name, *timing)
    await scene.event("a", "start", within=SOON)
    b = scene.spawn("leader", "b", name, *timing)
    await until_candidate(observer, name, "b", within=SOON)
    frozen_at = await scene.pause(a)  # stopped right before its next check of is_leader
    await scene.event("b", "start", within=REAPED)
    await scene.accepted_write("b", within=SOON)
    await _until(frozen_at + 2 * LEASE)
    a.thaw()
    await scene.event("a", "end", within=SOON)
    for child in (a, b):
        child.proc.send_signal(signal.SIGTERM)
        assert await child.exited(within=SOON) == 0, child.tail()
    await until_lease(observer, name, lambda o: not lease_holders(o), within=REAPED)
    assert violations(scene) == [], describe(scene)
    assert [e["who"] for e in scene.events(kind="start")][:2] == ["a", "b"]


# -- faults of the control plane: a private one --------------------------------------------


@asynccontextmanager
async def _isolated(
    cp: LocalControlPlane, directory: Path
) -> AsyncIterator[tuple[Scene, Client, OperatorProcess]]:
    namespace = await anyio.to_thread.run_sync(
        cp.create_namespace, f"faults-{secrets.token_hex(3)}"
    )
    op = await anyio.to_thread.run_sync(_start_operator, cp.kubeconfig_path, namespace, directory)
    try:
        async with (
            Client(kubeconfig=cp.kubeconfig_path, namespace=namespace) as observer,
            _scene(cp.kubeconfig_path, namespace, directory) as scene,
        ):
            yield scene, observer, op
        assert op.alive(), op.log_tail()
    finally:
        await anyio.to_thread.run_sync(op.stop)


async def test_etcd_frozen_past_the_ttl(
    isolated_control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    cp = isolated_control_plane
    async with _isolated(cp, tmp_path) as (scene, observer, _):
        name = "frozen-etcd"
        await _semaphore(observer, name)
        scene.holder("a", name, ttl=TTL, release=True)
        await scene.event("a", "start", within=SOON)
        scene.holder("b", name, ttl=TTL, writes=5)
        await until_semaphore(observer, name, lambda s: s.waiting("b"), within=SOON)
        async with cp.frozen("etcd"):
            scene.faults.append("freeze etcd")
            frozen_at = time.monotonic()
            # Nothing can be written: every session renewal hangs. At its deadline a's body
            # is told and stops; b's session (and with it its place in the queue) expires.
            # A newcomer's requests hang too.
            scene.holder("c", name, ttl=TTL, writes=5)
            await scene.event("a", "end", within=SOON)
            await _until(frozen_at + 2 * TTL)
        for child in scene.children:
            await child.exited(within=REAPED)
        await _nothing_left(observer, name)
        assert violations(scene) == [], describe(scene)
        assert scene.events("a", "permit-lost")
        # Both were served after the thaw, in either order (b's place was forfeit).
        assert sorted(e["who"] for e in scene.events(kind="start")) == ["a", "b", "c"]


async def test_apiserver_restart_while_permits_are_held_and_waited_for(
    isolated_control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    cp = isolated_control_plane
    ttl = 15  # longer than a restart takes: the holder keeps its permit through it
    async with _isolated(cp, tmp_path) as (scene, observer, _):
        name = "restarted-apiserver"
        await _semaphore(observer, name)
        scene.holder("a", name, ttl=ttl, release=True)
        await scene.event("a", "start", within=SOON)
        for waiter in ("b", "c"):
            scene.holder(waiter, name, ttl=ttl, writes=5)
            await until_semaphore(observer, name, lambda s, w=waiter: s.waiting(w), within=SOON)
        await cp.arestart("kube-apiserver", kill=True)
        scene.faults.append("restart kube-apiserver")
        restarted = time.monotonic()
        # The holder renews its session again through the new process, and keeps writing.
        await renewed(observer, name, "a", within=SOON)
        writes = len(scene.events("a", "write"))
        await scene.event("a", "write", within=SOON, n=writes + 1)
        scene.release("a")
        for child in scene.children:
            await child.exited(within=SOON)
        await _nothing_left(observer, name)
        assert violations(scene) == [], describe(scene)
        assert not scene.events("a", "permit-lost"), describe(scene)
        assert any(e["t"] > restarted and e["accepted"] for e in scene.events("a", "write"))
        # Served in arrival order, each once.
        assert [e["who"] for e in scene.events(kind="start")] == ["a", "b", "c"]

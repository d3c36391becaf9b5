"""The operator as a separate process against the real control plane.

One operator process manages this module's namespace; each test uses its own objects.
Holders are real SDK clients (some in child processes that get SIGKILLed). Nothing here
asserts a duration: each test is built so that only the operator can make the awaited
change happen (a ``ttl=0`` permit is never reaped by time; a semaphore waiter never frees
a dead holder's unit itself), and waits for it on the watch with a generous bound.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from _operator_support import (
    OperatorProcess,
    await_until,
    holds,
    logged,
    ready_leader,
    start_operator,
    wait_for_event,
    wait_until,
    watch_until,
)
from anyio.streams.buffered import BufferedByteReceiveStream

from konductor_sdk import Client, Identity, NotFoundError, PodRef
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.clock import parse_rfc3339
from konductor_sdk._kernel.objects import BARRIER, POD, SEMAPHORE, SESSION, KObject
from konductor_sdk.semaphore import Semaphore
from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio

# A holder process: acquire one permit under a 2 s session, say so, then wait to be killed.
HOLDER = """
import sys, anyio
from konductor_sdk import Client, Identity
from konductor_sdk.semaphore import Semaphore

async def main():
    kubeconfig, namespace, name, holder = sys.argv[1:5]
    async with Client(kubeconfig=kubeconfig, namespace=namespace,
                      identity=Identity(holder=holder)) as client:
        permit = await Semaphore(name, permits=1, client=client, ttl=2).acquire()
        print("held", permit.token, permit.slot, permit.session, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


@pytest.fixture(scope="module")
def op_namespace(control_plane: ClusterHandle) -> Iterator[str]:
    name = control_plane.create_namespace(f"operator-e2e-{secrets.token_hex(3)}")
    yield name
    control_plane.rest().request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def operator(
    control_plane: ClusterHandle, op_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = start_operator(
        control_plane.kubeconfig_path, op_namespace, tmp_path_factory.mktemp("operator")
    )
    try:
        wait_until(lambda: ready_leader(op), timeout=60, what="ready and leading", op=op)
        yield op
    finally:
        op.stop()


@pytest.fixture
async def admin(kubeconfig: Path, op_namespace: str) -> AsyncIterator[Client]:
    async with Client(kubeconfig=kubeconfig, namespace=op_namespace) as client:
        yield client


def reaped(op: OperatorProcess, reason: str, kind: str = "Semaphore") -> float:
    return op.metric("konductor_operator_reaped_total", kind=kind, reason=reason) or 0.0


async def session_gone(client: Client, namespace: str, name: str) -> bool:
    try:
        await client.store.get(SESSION, namespace, name)
    except NotFoundError:
        return True
    return False


async def test_a_killed_holder_is_reaped_after_its_ttl(
    operator: OperatorProcess, op_namespace: str, kubeconfig: Path, admin: Client
) -> None:
    name = f"killed-{secrets.token_hex(2)}"
    before = reaped(operator, "SessionEnded")
    child = await anyio.open_process(
        [sys.executable, "-c", HOLDER, str(kubeconfig), op_namespace, name, "doomed"],
        stderr=None,
    )
    try:
        assert child.stdout is not None
        with anyio.fail_after(60):
            line = await BufferedByteReceiveStream(child.stdout).receive_until(b"\n", 256)
        held, token, slot, session = line.decode().split()
        assert (held, token, slot) == ("held", "1", "0")
    finally:
        child.kill()  # SIGKILL: no release, no clean-up; only its session's TTL ends it
        await child.wait()
    # A waiter never frees a dead holder's unit itself: this grant needs the operator.
    with anyio.fail_after(30):
        async with Semaphore(name, client=admin, ttl=5).hold() as permit:
            assert permit.token == 2
    with anyio.fail_after(20):
        reap = await wait_for_event(admin, op_namespace, name, "Reaped", "of doomed")
        await wait_for_event(admin, op_namespace, name, "Granted")
    assert reap.raw["involvedObject"]["kind"] == "Semaphore"
    assert "holders entry 0 " in reap.raw["message"]
    # The session ended on the operator's clock and the operator deleted it (its client,
    # SIGKILLed, could not), then removed the grant naming it.
    assert await session_gone(admin, op_namespace, session)
    await await_until(
        lambda: reaped(operator, "SessionEnded") >= before + 1, within=10, what="reap counter"
    )


class SkewedClock:
    """Real monotonic time, wall time off by ``skew`` seconds (a node with a bad clock)."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.skew)


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
async def test_a_renewing_holder_is_never_reaped_even_with_a_skewed_clock(
    operator: OperatorProcess, op_namespace: str, kubeconfig: Path, admin: Client, skew: float
) -> None:
    name = f"skewed-{secrets.token_hex(2)}"
    await Semaphore(name, permits=2, client=admin).create()
    live_client = Client(
        kubeconfig=kubeconfig,
        namespace=op_namespace,
        identity=Identity(holder="skewed"),
        clock=SkewedClock(skew),
    )
    dead_client = Client(kubeconfig=kubeconfig, namespace=op_namespace, identity=Identity("dead"))
    async with live_client, Semaphore(name, client=live_client, ttl=2).hold() as permit:
        # A positive control on the same object: a holder that stops renewing (its
        # client goes away without releasing: its session is kept, no longer renewed)
        # must be reaped meanwhile.
        async with dead_client:
            dead = await Semaphore(name, client=dead_client, ttl=2).acquire()
        with anyio.fail_after(30):
            await watch_until(
                admin, SEMAPHORE, op_namespace, name, lambda o: o is not None and not holds(o, dead)
            )
        assert await session_gone(admin, op_namespace, dead.session)
        # The live holder's session records its skewed wall clock...
        session = await admin.store.get(SESSION, op_namespace, permit.session)
        written = parse_rfc3339(session.spec["renewedAt"])
        off = (written - dt.datetime.now(dt.UTC)).total_seconds()
        assert abs(off - skew) < 600, "the holder's wall clock really is skewed"
        # ...and lives through 5 TTLs, counted in its own renewals (3 per TTL).
        with anyio.fail_after(60):
            await watch_until(
                admin,
                SESSION,
                op_namespace,
                permit.session,
                lambda o: o is not None and int(o.spec.get("renewCount", 0)) >= 15,
            )
        assert not permit.lost
        assert holds(await admin.store.get(SEMAPHORE, op_namespace, name), permit)


async def test_deleted_or_failed_pods_have_their_permits_reaped(
    operator: OperatorProcess, op_namespace: str, kubeconfig: Path, admin: Client
) -> None:
    name = f"podsem-{secrets.token_hex(2)}"
    await Semaphore(name, permits=2, client=admin).create()
    before = reaped(operator, "SessionEnded")
    permits = {}
    for pod_name in ("worker-0", "worker-1"):
        pod = await admin.store.create(
            POD,
            op_namespace,
            {
                "metadata": {"name": pod_name},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        )
        identity = Identity.for_pod(PodRef(pod_name, op_namespace, pod.uid))
        client = Client(kubeconfig=kubeconfig, namespace=op_namespace, identity=identity)
        await client.connect()
        # ttl=0: a session bound to the pod, never renewed and never expiring by time: only
        # the pod's end can end it (and with it the grant).
        permits[pod_name] = (client, await Semaphore(name, client=client, ttl=0).acquire())
    try:
        started = time.monotonic()
        await admin.store.delete(POD, op_namespace, "worker-0")
        _, gone = permits["worker-0"]
        with anyio.fail_after(20):
            await watch_until(
                admin, SEMAPHORE, op_namespace, name, lambda o: o is not None and not holds(o, gone)
            )
        print(f"pod deletion -> permit reaped in {time.monotonic() - started:.3f}s")
        # No kubelet runs here, so the pod's phase is set the way a kubelet would.
        await admin.store.patch(
            POD, op_namespace, "worker-1", {"status": {"phase": "Failed"}}, subresource="status"
        )
        _, failed = permits["worker-1"]
        with anyio.fail_after(20):
            obj = await watch_until(
                admin,
                SEMAPHORE,
                op_namespace,
                name,
                lambda o: o is not None and not holds(o, failed),
            )
        assert obj is not None
        assert obj.status["inUse"] == 0
        with anyio.fail_after(10):
            await gone.wait_lost()  # the holder's watch shows its grant gone
        # The operator ended each pod's session for the pod's end, then reaped its grant.
        for permit, verdict in ((gone, "PodDeleted"), (failed, "PodFailed")):
            assert await session_gone(admin, op_namespace, permit.session)
            line = f"session {op_namespace}/{permit.session} ended: pod over ({verdict})"
            await await_until(partial(logged, operator, line), within=10, what=repr(line))
        # Both reaps are one aggregated Event (same object, type and reason): its message
        # is the latest occurrence's, its count both.
        holder = permits["worker-1"][0].identity.holder
        assert holder.startswith("worker-1:")
        with anyio.fail_after(20):
            reap = await wait_for_event(admin, op_namespace, name, "Reaped", f"of {holder}")
        assert reap.raw["count"] == 2
        await await_until(
            lambda: reaped(operator, "SessionEnded") >= before + 2,
            within=10,
            what="reap counter",
        )
        for verdict in ("PodDeleted", "PodFailed"):
            ended = operator.metric("konductor_operator_sessions_ended_total", reason=verdict)
            assert ended is not None, verdict
            assert ended >= 1, verdict
    finally:
        for client, _ in permits.values():
            await client.aclose()


async def test_status_drift_is_repaired(
    operator: OperatorProcess, op_namespace: str, admin: Client
) -> None:
    name = f"drift-{secrets.token_hex(2)}"
    await Semaphore(name, permits=3, client=admin).create()

    def corrupt(obj: KObject) -> dict[str, Any]:
        return {**obj.status, "inUse": 3, "available": 0, "phase": "Full"}

    await update_status(admin, SEMAPHORE, op_namespace, name, corrupt)
    with anyio.fail_after(20):
        obj = await watch_until(
            admin,
            SEMAPHORE,
            op_namespace,
            name,
            lambda o: o is not None and o.status.get("inUse") == 0,
        )
    assert obj is not None
    assert (obj.status["available"], obj.status["phase"]) == (3, "Ready")


async def test_metrics_export_gauges_per_primitive(
    operator: OperatorProcess, op_namespace: str, admin: Client
) -> None:
    name = f"gauges-{secrets.token_hex(2)}"
    async with Semaphore(name, permits=4, client=admin, ttl=30).hold(weight=3):
        labels = {"kind": "Semaphore", "namespace": op_namespace, "name": name}
        await await_until(
            lambda: operator.metric("konductor_in_use", **labels) == 3.0,
            within=20,
            what="konductor_in_use == 3",
            op=operator,
        )
        assert operator.metric("konductor_limit", **labels) == 4.0
        assert operator.metric("konductor_holders", **labels) == 1.0
    assert operator.metric("konductor_operator_leader") == 1.0
    count = operator.metric("konductor_operator_reconcile_seconds_count", kind="Semaphore")
    assert count is not None


async def test_a_barrier_that_times_out_fails_counting_who_is_missing(
    operator: OperatorProcess, op_namespace: str, admin: Client
) -> None:
    name = f"timeout-{secrets.token_hex(2)}"
    try:
        await admin.store.list(BARRIER, op_namespace)
    except NotFoundError:
        pytest.skip("the Barrier CRD is not installed (crds/barrier.yaml missing)")
    await admin.store.create(
        BARRIER,
        op_namespace,
        {"metadata": {"name": name}, "spec": {"expected": 3, "timeoutSeconds": 2}},
    )
    user = await admin.whoami()

    def arrive(obj: KObject) -> dict[str, Any]:
        # A party that arrived and then hung (its process alive, never leaving): only the
        # timeout can end this generation, and nobody waits to judge it but the operator.
        return {
            **obj.status,
            "generation": 1,
            "phase": "Waiting",
            "arrived": 1,
            "arrivedBy": {user: 1},
            "nextIndex": 1,
        }

    await update_status(admin, BARRIER, op_namespace, name, arrive)
    with anyio.fail_after(30):
        obj = await watch_until(
            admin,
            BARRIER,
            op_namespace,
            name,
            lambda o: o is not None and o.status.get("phase") == "Failed",
        )
    assert obj is not None
    assert obj.status["reason"] == "Timeout"
    assert obj.status["missing"] == ["<2 more>"]  # waiters name them; the operator counts
    with anyio.fail_after(20):
        failed = await wait_for_event(admin, op_namespace, name, "Failed")
    assert failed.raw["type"] == "Warning"


# A barrier party process: arrive (one party, session TTL 2 s), say so, wait to be killed.
PARTY = """
import sys, anyio
from konductor_sdk import Client, Identity
from konductor_sdk.barrier import Barrier

async def main():
    kubeconfig, namespace, name = sys.argv[1:4]
    async with Client(kubeconfig=kubeconfig, namespace=namespace,
                      identity=Identity(holder="doomed-party")) as client:
        barrier = Barrier(name, expected=3, client=client, ttl=2, party="doomed")
        generation = await barrier.arrive()
        print("arrived", generation, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


async def test_a_killed_partys_arrival_is_withdrawn_after_its_session_ended(
    operator: OperatorProcess, op_namespace: str, kubeconfig: Path, admin: Client
) -> None:
    name = f"killed-party-{secrets.token_hex(2)}"
    child = await anyio.open_process(
        [sys.executable, "-c", PARTY, str(kubeconfig), op_namespace, name], stderr=None
    )
    try:
        assert child.stdout is not None
        with anyio.fail_after(60):
            line = await BufferedByteReceiveStream(child.stdout).receive_until(b"\n", 256)
        assert line.startswith(b"arrived 1")
    finally:
        child.kill()  # SIGKILL: its session is never renewed again, nor deleted
        await child.wait()
    obj = await admin.store.get(BARRIER, op_namespace, name)
    assert obj.status["arrived"] == 1
    # Only the operator can withdraw it: nobody else may lower the dead party's count.
    with anyio.fail_after(30):
        obj = await watch_until(
            admin, BARRIER, op_namespace, name, lambda o: o is not None and o.status["arrived"] == 0
        )
    assert obj is not None
    assert obj.status["phase"] == "Waiting"
    assert obj.status["departed"] == [[0, 1]]

"""High availability: two operator processes, kill -9 the leader, the standby takes over;
and, in process, losing the lease cancels the running controllers at once."""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path

import anyio
import pytest
from _operator_support import await_until, holds, ready_leader, start_operator, watch_until

from konductor_operator import Operator, OperatorConfig, OperatorContext
from konductor_sdk import Client, Identity, NotFoundError
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.objects import LEASE, SEMAPHORE, SESSION, KObject
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


async def test_standby_takes_over_after_the_leader_is_killed_and_keeps_reaping(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    a = start_operator(kubeconfig, namespace, tmp_path, identity="op-a")
    b = None
    try:
        await await_until(lambda: ready_leader(a), within=60, what="op-a leading", op=a)
        b = start_operator(kubeconfig, namespace, tmp_path, identity="op-b")
        standby = b
        await await_until(
            lambda: standby.get("/readyz")[0] == 200, within=60, what="op-b ready", op=b
        )
        assert b.metric("konductor_operator_leader") == 0.0, "two leaders"
        async with Client(kubeconfig=kubeconfig, namespace=namespace) as admin:
            lease = await admin.store.get(LEASE, namespace, "konductor-operator")
            assert lease.status["holder"] == "op-a"

            a.stop(signal.SIGKILL)  # no release: op-b must wait the lease out
            killed = time.monotonic()
            # A holder dying now can only be reaped by the new leader.
            name = f"after-{secrets.token_hex(2)}"
            async with Client(
                kubeconfig=kubeconfig, namespace=namespace, identity=Identity("dies")
            ) as dying:
                dead = await Semaphore(name, permits=1, client=dying, ttl=2).acquire()

            await await_until(
                lambda: standby.metric("konductor_operator_leader") == 1.0,
                within=30,
                what="op-b leading",
                op=b,
            )
            print(f"takeover {time.monotonic() - killed:.2f}s after kill -9 (lease 4 s)")
            with anyio.fail_after(30):
                obj = await watch_until(
                    admin,
                    SEMAPHORE,
                    namespace,
                    name,
                    lambda o: o is not None and not holds(o, dead),
                )
            assert obj is not None
            # op-b ended the session on its own clock and deleted it, then reaped the grant.
            with pytest.raises(NotFoundError):
                await admin.store.get(SESSION, namespace, dead.session)
            lease = await admin.store.get(LEASE, namespace, "konductor-operator")
            assert lease.status["holder"] == "op-b"
            assert lease.status["fencingToken"] == 2
        await await_until(
            lambda: (
                (
                    standby.metric(
                        "konductor_operator_reaped_total", kind="Semaphore", reason="SessionEnded"
                    )
                    or 0
                )
                >= 1
            ),
            within=10,
            what="op-b's reap counter",
        )
    finally:
        a.stop(signal.SIGKILL)
        if b is not None:
            b.stop()


async def test_losing_the_lease_cancels_controllers_at_once_and_campaigns_again(
    kubeconfig: Path, namespace: str
) -> None:
    terms: list[str] = []
    running = anyio.Event()
    cancelled = anyio.Event()
    restarted = anyio.Event()

    async def probe(ctx: OperatorContext) -> None:
        terms.append("started")
        (restarted if running.is_set() else running).set()
        try:
            await anyio.sleep_forever()
        finally:
            terms.append("cancelled")
            cancelled.set()

    config = OperatorConfig(
        namespaces=(namespace,),
        metrics_port=0,
        lease_name="inproc",
        lease_namespace=namespace,
        lease_duration=4,
        renew_deadline=3,
        retry_period=0.5,
        identity="inproc-op",
    )
    async with Client(kubeconfig=kubeconfig, namespace=namespace) as client:
        operator = Operator(config, client=client, controllers=[("probe", probe)])
        async with anyio.create_task_group() as tg:
            await tg.start(operator.run)
            with anyio.fail_after(30):
                await running.wait()
            assert operator.statistics().leading
            assert operator.metrics.registry.get_sample_value("konductor_operator_leader") == 1

            def steal(obj: KObject) -> dict[str, object]:
                # An admin force-releases the lease: the elector's next renewal fails its
                # JSON-patch test, and the term must end before anyone else could lead.
                return {**obj.status, "holders": {}, "holder": ""}

            await update_status(client, LEASE, namespace, "inproc", steal)
            with anyio.fail_after(30):
                await cancelled.wait()
            assert terms[:2] == ["started", "cancelled"]
            # It campaigns again and, nobody else running, leads a second term.
            with anyio.fail_after(30):
                await restarted.wait()
            assert terms == ["started", "cancelled", "started"]
            assert operator.statistics().terms == 2
            tg.cancel_scope.cancel()

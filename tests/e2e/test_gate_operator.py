"""Gates with the operator running as a separate process (``python -m konductor_operator``,
HTTP probes enabled for one URL prefix on 127.0.0.1): timeout, a failing Job, an HTTP
probe, and the blocking SDK waiting in a thread. Nothing here asserts a duration: each
test waits (with a generous bound) for a change only the operator can make."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _operator_support import OperatorProcess, ready_leader, start_operator, wait_until
from aiohttp import web

from konductor_sdk import Client, GateFailed
from konductor_sdk._kernel.objects import GATE, JOB
from konductor_sdk.gate import Condition, Gate
from konductor_sdk.testing import ClusterHandle
from konductor_sdk.testing._process import free_port

pytestmark = pytest.mark.anyio
# The one port (and path) the operator's allow-list admits; the probe test serves there.
PROBE_PORT = free_port()


@pytest.fixture(scope="module")
def gate_namespace(control_plane: ClusterHandle) -> Iterator[str]:
    name = control_plane.create_namespace(f"gate-e2e-{secrets.token_hex(3)}")
    yield name
    control_plane.rest().request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def operator(
    control_plane: ClusterHandle, gate_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = start_operator(
        control_plane.kubeconfig_path,
        gate_namespace,
        tmp_path_factory.mktemp("gate-operator"),
        lease_name="gate-e2e-operator",
        extra=(
            "--enable-http-probes",
            "--http-probe-allow",
            f"http://127.0.0.1:{PROBE_PORT}/ready",
        ),
    )
    try:
        wait_until(lambda: ready_leader(op), timeout=60, what="ready and leading", op=op)
        yield op
    finally:
        op.stop()


@pytest.fixture
async def admin(
    kubeconfig: Path, gate_namespace: str, operator: OperatorProcess
) -> AsyncIterator[Client]:
    async with Client(kubeconfig=kubeconfig, namespace=gate_namespace) as client:
        yield client


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(2)}"


async def _wait_bounded(gate: Gate, op: OperatorProcess) -> Any:
    # A bound on a hung test (with the operator's log), not a timing assertion.
    try:
        with anyio.fail_after(60):
            return await gate.wait()
    except TimeoutError:
        raise AssertionError(f"gate never concluded; operator log:\n{op.log_tail()}") from None


async def test_timeout_fails_naming_the_unmet_condition(
    admin: Client, operator: OperatorProcess
) -> None:
    gate = Gate(_name("deadline"), client=admin)
    await gate.create(
        [Condition.external("built"), Condition.any("ok", Condition.external("approved"))],
        timeout=1,
    )
    await gate.mark("built")
    with pytest.raises(GateFailed) as info:
        await _wait_bounded(gate, operator)
    message = str(info.value)
    assert "Timeout" in message
    assert "waiting for: approved" in message
    assert "built" not in message.split("waiting for:")[1]
    st = await gate.status()
    assert st.reason == "Timeout"
    # Failed is final for this spec: a late mark does not reopen it.
    assert (await gate.mark("approved")).phase == "Failed"


async def test_a_failed_job_fails_the_gate(admin: Client, operator: OperatorProcess) -> None:
    job = _name("train")
    body = {
        "metadata": {"name": job},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            }
        },
    }
    await admin.store.create(JOB, admin.namespace, body)
    gate = Gate(_name("after-train"), client=admin)
    await gate.create([Condition.job("trained", job), Condition.external("approved")])
    async with anyio.create_task_group() as tg:

        async def fails() -> None:
            with pytest.raises(GateFailed, match="trained"):
                await _wait_bounded(gate, operator)

        tg.start_soon(fails)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "startTime": now,
            "failed": 1,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "lastTransitionTime": now},
            ],
        }
        await admin.store.patch(JOB, admin.namespace, job, {"status": status}, subresource="status")
    st = await gate.status()
    assert st.reason == "ConditionFailed"
    assert next(c for c in st.conditions if c.name == "trained").failed


async def test_http_probe_opens_a_gate_a_blocking_waiter_waits_for(
    admin: Client, operator: OperatorProcess, kubeconfig: Path, gate_namespace: str
) -> None:
    state = {"code": 503}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ready": state["code"] == 200}, status=state["code"])

    app = web.Application()
    app.router.add_get("/ready", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", PROBE_PORT)
    await site.start()
    port = PROBE_PORT
    name = _name("probe")
    try:
        await Gate(name, client=admin).create(
            [
                Condition.http(
                    "ready",
                    f"http://127.0.0.1:{port}/ready",
                    json_field="ready",
                    json_value="true",
                    interval=1,
                    timeout=1,
                )
            ]
        )

        def blocking_wait() -> str:
            from konductor_sdk.sync import Client as SyncClient
            from konductor_sdk.sync.gate import Gate as SyncGate

            with SyncClient(kubeconfig=kubeconfig, namespace=gate_namespace) as c:
                return SyncGate(name, client=c).wait().phase

        async with anyio.create_task_group() as tg:
            phases: list[str] = []

            async def run_blocking() -> None:
                phases.append(await anyio.to_thread.run_sync(blocking_wait))

            tg.start_soon(run_blocking)
            st = await Gate(name, client=admin).status()
            assert not st.open
            state["code"] = 200  # the task group then waits for the blocking waiter
        assert phases == ["Open"]
    finally:
        await runner.cleanup()


async def test_a_latched_gate_stays_open_once_the_operator_recorded_the_opening(
    admin: Client, operator: OperatorProcess
) -> None:
    gate = Gate(_name("latched"), client=admin)
    await gate.create([Condition.external("a"), Condition.external("b")], latch=True)
    await gate.mark("a")
    await gate.mark("b")
    watch = await admin.watch(GATE, admin.namespace)
    with anyio.fail_after(60):  # until the operator stored the opening (its write, not ours)
        while True:
            changed = watch.next_change(gate.name)
            stored = watch.get(gate.name)
            if stored is not None and stored.status.get("phase") == "Open":
                break
            await changed.wait()
    opened = await gate.status()
    st = await gate.mark("a", met=False)
    assert st.open
    assert st.opened_at == opened.opened_at
    assert st.open_count == 1
    # A new spec is a new gate: it is judged afresh (and a is unmet now).
    await admin.store.patch(GATE, admin.namespace, gate.name, {"spec": {"latch": False}})
    assert not (await gate.status()).open

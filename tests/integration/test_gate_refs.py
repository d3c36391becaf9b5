"""The gate controller on the real API server (run in-process, with its own client as a
separate process would): every condition type, Job failure, CEL errors, cross-namespace
access for permitted and refused creators, HTTP probes, and waking on the right event."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _gate_helpers import entry, gate_controller, judged, message_has, parked, phase_is, until
from aiohttp import web

from konductor_sdk import Client, ForbiddenError, GateFailed, NotFoundError
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.objects import (
    BARRIER,
    GATE,
    JOB,
    ONCE,
    SEMAPHORE,
    WAITGROUP,
    KObject,
    ResourceKind,
)
from konductor_sdk._machines.gate import judge, normalize
from konductor_sdk.gate import Condition, Gate
from konductor_sdk.lease import Lease
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import until_allowed

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Client]
CONFIGMAP = ResourceKind("", "v1", "configmaps", "ConfigMap")
DEPLOYMENT = ResourceKind("apps", "v1", "deployments", "Deployment")
NAMESPACE = ResourceKind("", "v1", "namespaces", "Namespace", namespaced=False)
ROLE = ResourceKind("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDING = ResourceKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")


@pytest.fixture
async def operator(kubeconfig: Path, namespace: str) -> AsyncIterator[Any]:
    async with gate_controller(kubeconfig, namespace) as controller:
        yield controller


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def make_job(client: Client, name: str, namespace: str | None = None) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}],
                }
            }
        },
    }
    await client.store.create(JOB, namespace or client.namespace, body)


async def finish_job(client: Client, name: str, how: str, namespace: str | None = None) -> None:
    """Set the Job's terminal conditions through the status subresource (no job controller
    runs here); the API server validates the transition like a real controller's write."""
    ns = namespace or client.namespace
    now = _now()
    first = "SuccessCriteriaMet" if how == "Complete" else "FailureTarget"
    status: dict[str, Any] = {
        "startTime": now,
        "conditions": [
            {"type": first, "status": "True", "lastTransitionTime": now},
            {"type": how, "status": "True", "lastTransitionTime": now},
        ],
    }
    if how == "Complete":
        status.update(succeeded=1, completionTime=now)
    else:
        status["failed"] = 1
    await client.store.patch(JOB, ns, name, {"status": status}, subresource="status")


async def test_job_complete_and_failed(client: Client, operator: Any) -> None:
    await make_job(client, "validate")
    await make_job(client, "canary")
    ok = Gate("after-validate", client=client)
    await ok.create([Condition.job("validated", "validate")])
    doomed = Gate("after-canary", client=client)
    await doomed.create([Condition.job("canary-ok", "canary")])
    expect_failure = Gate("canary-must-fail", client=client)
    await expect_failure.create([Condition.job("canary-failed", "canary", state="Failed")])
    await until(client, "after-validate", message_has("validated", "not finished"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(ok.wait)
        await finish_job(client, "validate", "Complete")
    assert entry(await client.store.get(GATE, client.namespace, "after-validate"), "validated")[
        "met"
    ]

    async def fails() -> None:
        with pytest.raises(GateFailed, match="canary-ok") as info:
            await doomed.wait()
        assert "ended Failed" in str(info.value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fails)
        await parked(doomed)
        await finish_job(client, "canary", "Failed")
    st = await doomed.status()
    assert st.reason == "ConditionFailed"
    assert st.conditions[0].failed
    assert (await expect_failure.wait()).open


async def test_konductor_primitives(client: Client, operator: Any) -> None:
    ns = client.namespace
    await client.store.create(SEMAPHORE, ns, {"metadata": {"name": "pool"}, "spec": {"permits": 1}})
    upstream = Gate("upstream", client=client)
    await upstream.create([Condition.external("go")])
    gate = Gate("prims", client=client)
    await gate.create(
        [
            Condition.semaphore("two-free", "pool", min_available=2),
            Condition.lease("leader", "leader"),
            Condition.lease("nobody", "idle", state="Free"),
            Condition.gate("upstream-open", "upstream"),
        ]
    )
    await until(client, "prims", message_has("two-free", "1 available (need 2)"))
    assert entry(await _get(client, "prims"), "nobody")["met"] is False  # "not found"
    await client.store.patch(SEMAPHORE, ns, "pool", {"spec": {"permits": 2}})
    await until(client, "prims", lambda o: entry(o, "two-free").get("met") is True)
    async with Lease("idle", client=client):
        pass  # creates the Lease object; free again on exit
    await until(client, "prims", lambda o: entry(o, "nobody").get("met") is True)
    async with Lease("leader", client=client):
        await until(client, "prims", lambda o: entry(o, "leader").get("met") is True)
        assert judged(await _get(client, "prims"))["phase"] == "Waiting"
        await upstream.mark("go")
        await until(client, "prims", phase_is("Open"))
    await until(client, "prims", phase_is("Waiting"))  # the lease was released
    assert "free (want Held)" in entry(await _get(client, "prims"), "leader")["message"]


async def _get(client: Client, name: str, kind: ResourceKind = GATE) -> KObject:
    return await client.store.get(kind, client.namespace, name)


async def test_gate_on_failed_gate_fails(client: Client, operator: Any) -> None:
    await Gate("first", client=client).create([Condition.external("a")])
    second = Gate("second", client=client)
    await second.create([Condition.gate("first-open", "first")])

    def fail(obj: KObject) -> dict[str, Any]:
        failure = {"reason": "Timeout", "message": "timed out", "specHash": judged(obj)["specHash"]}
        return normalize(obj.spec, {**judge(obj), "failure": failure})

    async with anyio.create_task_group() as tg:

        async def fails() -> None:
            with pytest.raises(GateFailed, match="first-open"):
                await second.wait()

        tg.start_soon(fails)
        await parked(second)
        await update_status(client, GATE, client.namespace, "first", fail)
    assert (await second.status()).reason == "ConditionFailed"


@pytest.mark.parametrize(
    ("kind", "spec", "pending", "done", "condition"),
    [
        (
            BARRIER,
            {"expected": 2},
            {"generation": 1},
            # A Barrier is Open only with enough arrivals (crds/barrier.yaml).
            {"generation": 1, "phase": "Open", "arrived": 2, "arrivedBy": {"u": 2}, "nextIndex": 2},
            Condition.barrier("b", "ref"),
        ),
        (ONCE, {}, {"phase": "Pending"}, {"phase": "Done"}, Condition.once("b", "ref")),
        (WAITGROUP, {}, {"counter": 2}, {"counter": 0}, Condition.wait_group("b", "ref")),
    ],
)
async def test_other_primitives(
    client: Client,
    operator: Any,
    kind: ResourceKind,
    spec: dict[str, Any],
    pending: dict[str, Any],
    done: dict[str, Any],
    condition: Condition,
) -> None:
    try:
        obj = await client.store.create(
            kind, client.namespace, {"metadata": {"name": "ref"}, "spec": spec}
        )
    except NotFoundError:
        pytest.skip(f"the {kind.kind} CRD is not installed (crds/ has none yet)")
    obj = await client.store.replace(kind, obj.with_status(pending), subresource="status")
    gate = Gate("g", client=client)
    await gate.create([condition])
    await until(client, "g", lambda o: bool(entry(o, "b")))
    assert judged(await _get(client, "g"))["phase"] == "Waiting"
    await client.store.replace(kind, obj.with_status(done), subresource="status")
    assert (await gate.wait()).open


async def test_object_cel_and_errors_in_status(client: Client, operator: Any) -> None:
    ns = client.namespace
    await client.store.create(CONFIGMAP, ns, {"metadata": {"name": "flags"}, "data": {"a": "1"}})
    await client.store.create(
        DEPLOYMENT,
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        },
    )
    gate = Gate("cel", client=client)
    await gate.create(
        [
            Condition.object(
                "ready",
                api_version="v1",
                kind="ConfigMap",
                object_name="flags",
                expression='has(object.data.ready) && object.data.ready == "true"',
            ),
            Condition.object(
                "missing-key",
                api_version="v1",
                kind="ConfigMap",
                object_name="flags",
                expression='object.data.nope == "x"',
            ),
            Condition.object(
                "not-bool",
                api_version="v1",
                kind="ConfigMap",
                object_name="flags",
                expression="size(object.data)",
            ),
            Condition.object(
                "available",
                api_version="apps/v1",
                kind="Deployment",
                object_name="web",
                expression="object.status.availableReplicas >= 3",
            ),
            Condition.object(
                "unknown-kind",
                api_version="example.com/v1",
                kind="Widget",
                object_name="w",
                expression="true",
            ),
        ],
        match="any",
    )
    obj = await until(client, "cel", message_has("missing-key", "no such key"))
    assert "no such key: nope" in entry(obj, "missing-key")["message"]
    assert "must evaluate to a bool, got int" in entry(obj, "not-bool")["message"]
    assert "CEL error" in entry(obj, "available")["message"]  # no status yet
    assert "example.com/v1 is not served" in entry(obj, "unknown-kind")["message"]
    assert judged(obj)["phase"] == "Waiting"
    # The controller survived all that: a real change is still judged.
    await client.store.patch(CONFIGMAP, ns, "flags", {"data": {"ready": "true"}})
    obj = await until(client, "cel", phase_is("Open"))
    assert entry(obj, "ready")["met"]
    assert not entry(obj, "available")["met"]
    await client.store.patch(
        DEPLOYMENT,
        ns,
        "web",
        {
            "status": {
                "replicas": 3,
                "readyReplicas": 3,
                "availableReplicas": 3,
                "updatedReplicas": 3,
            }
        },
        subresource="status",
    )
    await until(client, "cel", lambda o: entry(o, "available").get("met") is True)


async def test_waiter_wakes_on_first_event_after_the_condition_holds(
    client: Client, operator: Any, make_client: MakeClient
) -> None:
    ns = client.namespace
    await client.store.create(CONFIGMAP, ns, {"metadata": {"name": "switch"}, "data": {"off": "1"}})
    await Gate("follow", client=client).create(
        [
            Condition.object(
                "on",
                api_version="v1",
                kind="ConfigMap",
                object_name="switch",
                expression='"on" in object.data',
            )
        ]
    )
    await until(client, "follow", message_has("on", "expression is False"))
    waiter_client = make_client("waiter")
    await waiter_client.connect()
    watch = await waiter_client.watch(GATE, ns)
    events: list[tuple[int, str]] = []
    watch.add_listener(lambda _t, o: events.append((int(o.resource_version), judged(o)["phase"])))
    waiter = Gate("follow", client=waiter_client)
    returned: list[int] = []

    async def wait() -> None:
        await waiter.wait()
        returned.append(len(events))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await parked(waiter)
        switched = await client.store.patch(CONFIGMAP, ns, "switch", {"data": {"on": "1"}})
    after = [(rv, phase) for rv, phase in events if rv > int(switched.resource_version)]
    # The first gate event after the switch flipped is the one that opened it, and the
    # waiter returned on exactly that event.
    assert after[0][1] == "Open"
    assert events.index(after[0]) == returned[0] - 1


async def _grant(
    client: Client,
    control_plane: ClusterHandle,
    namespace: str,
    user: str,
    rules: list[dict[str, Any]],
) -> None:
    name = f"{user}-role"
    await client.store.create(ROLE, namespace, {"metadata": {"name": name}, "rules": rules})
    await client.store.create(
        ROLE_BINDING,
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    # In force a moment after the write: wait until the authorizer applies the first rule.
    rule = rules[0]
    await until_allowed(
        control_plane,
        namespace,
        rule["resources"][0],
        user=user,
        verb=rule["verbs"][0],
        group=rule["apiGroups"][0],
    )


async def test_cross_namespace_reference_follows_creator_rbac(
    client: Client, operator: Any, control_plane: ClusterHandle, namespace: str
) -> None:
    other = f"{namespace[:50]}-jobs"
    await client.store.create(NAMESPACE, None, {"metadata": {"name": other}})
    await make_job(client, "build", other)
    gates = [
        {
            "apiGroups": ["sync.konductor.io"],
            "resources": ["gates", "gates/status"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ]
    for user in ("alice", "bob"):
        await _grant(client, control_plane, namespace, user, gates)
    await _grant(
        client,
        control_plane,
        other,
        "alice",
        [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}],
    )
    assert operator.access.policy_active, operator.access.policy_error
    results: dict[str, KObject] = {}
    for user in ("alice", "bob"):
        cfg = control_plane.mint_kubeconfig(user, ["team"], namespace=namespace)
        async with Client(kubeconfig=cfg, namespace=namespace) as c:
            gate = Gate(f"{user}-gate", client=c)
            st = await gate.create([Condition.job("built", "build", namespace=other)])
            assert st.name == f"{user}-gate"
            # The API server refuses a spec claiming someone else as its creator.
            lie = {
                "metadata": {"name": f"{user}-lie"},
                "spec": {
                    "creator": {"username": "admin"},
                    "conditions": [{"name": "x", "external": {}}],
                },
            }
            with anyio.fail_after(20):
                while True:  # the policy may need a moment to be in force after install
                    try:
                        await c.store.create(GATE, namespace, lie)
                    except ForbiddenError as exc:
                        refusal = str(exc)
                        break
                    await c.store.delete(GATE, namespace, f"{user}-lie")
                    await anyio.sleep(0.2)
            assert "spec.creator must be" in refusal
    await finish_job(client, "build", "Complete", other)
    results["alice"] = await until(client, "alice-gate", phase_is("Open"))
    results["bob"] = await until(client, "bob-gate", message_has("built", "refused"))
    assert "bob may not get it" in entry(results["bob"], "built")["message"]
    assert judged(results["bob"])["phase"] == "Waiting"
    assert (await client.store.get(GATE, namespace, "alice-gate")).spec["creator"] == {
        "username": "alice",
        "groups": ["team", "system:authenticated"],
    }


@pytest.fixture
async def http_server() -> AsyncIterator[dict[str, Any]]:
    state: dict[str, Any] = {"code": 503, "body": {"status": {"ready": False}}, "hits": 0}

    async def handler(request: web.Request) -> web.Response:
        state["hits"] += 1
        return web.json_response(state["body"], status=state["code"])

    app = web.Application()
    app.router.add_get("/health", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    state["port"] = sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_http_probe(
    client: Client, kubeconfig: Path, namespace: str, http_server: dict[str, Any]
) -> None:
    url = f"http://127.0.0.1:{http_server['port']}/health"
    gate = Gate("probe", client=client)
    await gate.create(
        [
            Condition.http("up", url, interval=1, timeout=1),
            Condition.http(
                "ready", url, json_field="status.ready", json_value="true", interval=1, timeout=1
            ),
            Condition.http(
                "elsewhere", f"http://localhost:{http_server['port']}/health", interval=1, timeout=1
            ),
        ],
        match="any",
    )
    async with gate_controller(kubeconfig, namespace) as _disabled:
        obj = await until(client, "probe", message_has("up", "disabled"))
    assert http_server["hits"] == 0
    async with gate_controller(kubeconfig, namespace, probes=True, allow=(url,)):
        obj = await until(client, "probe", message_has("up", "status 503, want 200"))
        assert (
            "not under any of the operator's --http-probe-allow prefixes"
            in entry(obj, "elsewhere")["message"]
        )
        http_server["code"] = 200
        obj = await until(client, "probe", phase_is("Open"))
        assert entry(obj, "up")["met"]
        assert not entry(obj, "ready").get("met")
        http_server["body"] = {"status": {"ready": True}}
        await until(client, "probe", lambda o: entry(o, "ready").get("met") is True)

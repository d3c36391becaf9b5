"""Gate on the real API server, SDK side: marks, AND/OR/nested trees, latch, waking, safety
under concurrency, a second user marking. No operator is needed for external conditions
(marks are CAS writes that re-derive the phase), which is what lets these tests isolate
the SDK; the controller's tests are in test_gate_refs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _gate_helpers import judged, parked

from konductor_sdk import Client, ConfigurationError, ForbiddenError, GateFailed, NotFoundError
from konductor_sdk._kernel.objects import GATE, KObject
from konductor_sdk._machines.gate import judge
from konductor_sdk.gate import Condition, Gate
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import until_allowed

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Client]


def ext(*names: str) -> list[Condition]:
    return [Condition.external(n) for n in names]


async def test_all_any_and_nested_tree(client: Client) -> None:
    # validated AND (stage1 OR approved) AND (x AND (y OR z)) -- depth 3
    gate = Gate("tree", client=client)
    await gate.create(
        [
            Condition.external("validated"),
            Condition.any("stage", *ext("stage1", "approved")),
            Condition.all("inner", Condition.external("x"), Condition.any("yz", *ext("y", "z"))),
        ]
    )
    steps = [
        ("approved", "Waiting"),
        ("validated", "Waiting"),
        ("x", "Waiting"),
        ("z", "Open"),
    ]
    for name, phase in steps:
        st = await gate.mark(name)
        assert st.phase == phase, (name, st)
    assert st.met == 4
    assert st.total == 6
    # OR: the other branch alone also opens it; AND: unmarking one conjunct closes it
    assert (await gate.mark("approved", met=False)).phase == "Waiting"
    assert "stage1" in (await gate.status()).message
    assert (await gate.mark("stage1")).phase == "Open"
    assert (await gate.mark("x", met=False)).phase == "Waiting"


async def test_match_any_at_top_level(client: Client) -> None:
    gate = Gate("top-any", client=client)
    await gate.create(ext("a", "b"), match="any")
    assert (await gate.status()).phase == "Waiting"
    assert (await gate.mark("b")).open


async def test_latch_off_follows_conditions(client: Client) -> None:
    gate = Gate("nolatch", client=client)
    await gate.create(ext("a"))
    assert (await gate.mark("a")).open
    st = await gate.mark("a", met=False, message="revoked")
    assert st.phase == "Waiting"
    assert st.opened_at is None
    assert st.conditions[0].message == "revoked"
    st = await gate.mark("a")
    assert st.open


async def test_without_the_operator_a_latch_has_no_recorded_opening_to_hold(
    client: Client,
) -> None:
    # Marks write only their condition (policies/gate.yaml); the operator records openings
    # (tests/e2e/test_gate_operator.py checks that a latched gate then stays open).
    gate = Gate("latched", client=client)
    await gate.create(ext("a", "b"), latch=True)
    await gate.mark("a")
    assert (await gate.mark("b")).open
    st = await gate.mark("a", met=False)
    assert not st.open
    stored = await client.store.get(GATE, client.namespace, "latched")
    assert "phase" not in stored.status  # a marker never wrote a derived field


async def test_waiter_wakes_on_the_event_that_opens_the_gate(
    client: Client, make_client: MakeClient
) -> None:
    gate = Gate("wake", client=client)
    await gate.create(ext("a", "b", "c"))
    waiter_client = make_client("waiter")
    await waiter_client.connect()
    watch = await waiter_client.watch(GATE, waiter_client.namespace)
    seen: list[str] = []
    watch.add_listener(lambda _t, obj: seen.append(judge(obj)["phase"]))
    returned_after: list[int] = []
    waiter = Gate("wake", client=waiter_client)

    async def wait() -> None:
        await waiter.wait()
        returned_after.append(len(seen))  # synchronously after wait() returned

    gets_before = waiter_client.store.stats["get"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await parked(waiter)
        for name in ("a", "b", "c"):
            await gate.mark(name)
    # The waiter returned on the first event carrying the Open status (not one later) and
    # never read the object meanwhile: it was woken by the watch, not by polling.
    assert seen.index("Open") == returned_after[0] - 1
    assert waiter_client.store.stats["get"] == gets_before
    assert waiter.statistics().opened == 1


async def test_many_markers_and_waiters_never_open_early(make_client: MakeClient) -> None:
    names = [f"c{i}" for i in range(6)]
    clients = [make_client(f"m{i}") for i in range(4)]
    for c in clients:
        await c.connect()
    await Gate("crowd", client=clients[0]).create(ext(*names))
    observer = clients[0]
    watch = await observer.watch(GATE, observer.namespace)
    violations: list[Any] = []

    def check(_t: str, obj: KObject) -> None:
        s = judge(obj)
        met = {e["name"] for e in s.get("conditions") or () if e.get("met")}
        if s["phase"] == "Open" and met != set(names):
            violations.append((s["phase"], sorted(met)))

    watch.add_listener(check)
    results: list[str] = []

    async def waiter(c: Client) -> None:
        results.append((await Gate("crowd", client=c).wait()).phase)

    async def marker(i: int, name: str) -> None:
        await Gate("crowd", client=clients[i % len(clients)]).mark(name, message=f"by {i}")

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(waiter, clients[i % len(clients)])
        for i, name in enumerate(names):
            tg.start_soon(marker, i, name)
    assert results == ["Open"] * 12
    assert not violations
    final = await Gate("crowd", client=observer).status()
    assert sorted(c.name for c in final.conditions if c.met) == names  # no mark lost


async def test_mark_by_a_second_user(
    client: Client, control_plane: ClusterHandle, namespace: str, kubeconfig: Path
) -> None:
    gate = Gate("approval", client=client)
    await gate.create([Condition.external("approved"), Condition.external("tested")])
    rbac: list[dict[str, Any]] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "gate-marker", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["sync.konductor.io"],
                    "resources": ["gates"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["sync.konductor.io"],
                    "resources": ["gates/status"],
                    "verbs": ["get", "update"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "approver", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "gate-marker",
            },
            "subjects": [
                {"kind": "User", "name": "approver", "apiGroup": "rbac.authorization.k8s.io"}
            ],
        },
    ]
    from konductor_sdk._kernel.objects import ResourceKind

    for body in rbac:
        kind = ResourceKind("rbac.authorization.k8s.io", "v1", body["kind"].lower() + "s", "")
        await client.store.create(kind, namespace, body)
    await until_allowed(control_plane, namespace, "gates/status", user="approver", verb="update")
    approver_cfg = control_plane.mint_kubeconfig("approver", namespace=namespace)
    stranger_cfg = control_plane.mint_kubeconfig("stranger", namespace=namespace)
    async with Client(kubeconfig=approver_cfg, namespace=namespace) as approver:
        waiting = Gate("approval", client=approver)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting.wait)
            st = await waiting.mark("approved", message="LGTM")
            entry = next(c for c in st.conditions if c.name == "approved")
            assert entry.met
            assert entry.message == "LGTM"
            assert entry.marked_by["username"] == "approver"
            assert entry.marked_by["holder"] == approver.identity.holder
            await Gate("approval", client=client).mark("tested")
        assert (await waiting.status()).open
        # RBAC decides who may mark: get/watch alone is not enough to write status.
    async with Client(kubeconfig=stranger_cfg, namespace=namespace) as stranger:
        with pytest.raises(ForbiddenError):
            await Gate("approval", client=stranger).mark("approved", met=False)


async def test_bad_input_is_refused_before_anything_is_written(client: Client) -> None:
    gate = Gate("bad", client=client)
    cases: list[tuple[Any, dict[str, Any], str]] = [
        ([], {}, "spec.conditions must be a list of 1..32"),
        (ext("a", "a"), {}, "used twice"),
        ([Condition.any("g", Condition.external("a")), Condition.external("a")], {}, "twice"),
        (ext("A"), {}, "spec.conditions[0].name"),
        (ext("a"), {"match": "most"}, "match must be one of all, any"),
        (ext("a"), {"timeout": 0}, "timeout must be in 1.."),
        (ext("a"), {"timeout": 1.5}, "timeout must be whole seconds"),
        ([Condition.job("j", "x", state="Done")], {}, "state must be one of Complete, Failed"),
        ([Condition.semaphore("s", "x", min_available=0)], {}, "minAvailable must be"),
        ([Condition.http("h", "ftp://x")], {}, "url must be"),
        ([Condition.http("h", "http://x", timeout=20, interval=10)], {}, "timeoutSeconds"),
        (
            [Condition.object("o", api_version="v1", kind="X", object_name="y", expression="1 +")],
            {},
            "not valid CEL",
        ),
        (
            [Condition.all("a", Condition.all("b", Condition.all("c", Condition.external("d"))))],
            {},
            "at most 3 levels",
        ),
        ([{"name": "n", "external": {}, "job": {"name": "j"}}], {}, "exactly one of"),
    ]
    for conditions, kwargs, text in cases:
        with pytest.raises(ConfigurationError) as info:
            await gate.create(conditions, **kwargs)
        assert text in str(info.value), (text, str(info.value))
    with pytest.raises(NotFoundError):
        await gate.status()
    await gate.create(ext("a"))
    bad_marks: list[tuple[str, dict[str, Any]]] = [
        ("nope", {}),
        ("a", {"message": "x" * 1025}),
        ("a", {"met": "yes"}),
    ]
    for name, kwargs in bad_marks:
        with pytest.raises(ConfigurationError):
            await gate.mark(name, **kwargs)
    assert (await gate.status()).conditions == ()


async def test_wait_raises_when_missing_deleted_or_failed(client: Client) -> None:
    with pytest.raises(NotFoundError):
        await Gate("absent", client=client).wait()
    gate = Gate("doomed", client=client)
    await gate.create(ext("a"))
    async with anyio.create_task_group() as tg:

        async def deleted() -> None:
            with pytest.raises(NotFoundError):
                await gate.wait()

        tg.start_soon(deleted)
        await parked(gate)
        await gate.delete()
    # A spec the operator would reject (invalid) fails the gate; waiters are told why.
    obj = await client.store.create(
        GATE,
        client.namespace,
        {
            "metadata": {"name": "invalid"},
            "spec": {
                "creator": (await _creator(client)),
                "conditions": [
                    {"name": "a", "external": {}},
                    {"name": "g", "group": {"conditions": [{"name": "a", "external": {}}]}},
                ],
            },
        },
    )
    assert judged(obj)["phase"] == "Failed"
    with pytest.raises(GateFailed, match="used twice"):
        await Gate("invalid", client=client).wait()


async def _creator(client: Client) -> dict[str, Any]:
    from konductor_sdk.gate import whoami

    info = await whoami(client)
    assert info is not None
    return info


async def test_create_exist_ok_and_conflict(client: Client) -> None:
    gate = Gate("twice", client=client)
    first = await gate.create(ext("a"))
    from konductor_sdk import AlreadyExistsError

    with pytest.raises(AlreadyExistsError):
        await gate.create(ext("b"))
    again = await gate.create(ext("b"), exist_ok=True)
    assert again.total == first.total == 1
    assert (await gate.status()).message == "waiting for: a"


async def test_sync_twin(kubeconfig: Path, namespace: str) -> None:
    from konductor_sdk.sync import Client as SyncClient
    from konductor_sdk.sync.gate import Gate as SyncGate

    def scenario() -> tuple[str, str]:
        with SyncClient(kubeconfig=kubeconfig, namespace=namespace) as c:
            gate = SyncGate("blocking", client=c)
            gate.create(ext("go"))
            before = gate.status().phase
            gate.mark("go")
            after = gate.wait().phase
        return before, after

    assert await anyio.to_thread.run_sync(scenario) == ("Waiting", "Open")


async def test_a_cancelled_wait_leaves_nothing_behind(client: Client) -> None:
    gate = Gate("cancelled", client=client)
    await gate.create(ext("a"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(gate.wait)
        await parked(gate)
        tg.cancel_scope.cancel()
    assert gate.statistics().waiting == 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(gate.mark, "a")
        assert (await gate.wait()).open  # the handle still works after a cancelled wait
    assert gate.statistics().waits == 2

"""A gate naming an object the operator may not read (a Secret, with the generated operator
ClusterRole): the operator asks the API server once (SelfSubjectAccessReview), starts no
watch that would fail with 403 forever, says why in the gate's status, and logs it once per
``--forbidden-log-interval`` however often the gate is re-judged."""

from __future__ import annotations

import copy
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml
from _gate_helpers import entry, gate_controller, message_has, until

from konductor_sdk import Client
from konductor_sdk._kernel.objects import ResourceKind
from konductor_sdk.gate import Condition, Gate
from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SECRET = ResourceKind("", "v1", "secrets", "Secret")


@pytest.fixture
def operator_identity(control_plane: ClusterHandle, namespace: str) -> Iterator[Path]:
    """A kubeconfig of a user bound to (a renamed copy of) the generated operator role."""
    rest = control_plane.rest()
    suffix = secrets.token_hex(3)
    docs = yaml.safe_load_all((ROOT / "deploy/rbac/operator-role.yaml").read_text())
    (role,) = [
        copy.deepcopy(d)
        for d in docs
        if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "konductor-operator"
    ]
    user = f"gate-operator-{suffix}"
    role["metadata"]["name"] = user
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    rest.expect("POST", f"{RBAC}/clusterroles", role)
    rest.expect("POST", f"{RBAC}/clusterrolebindings", binding)
    try:
        control_plane.wait_allowed(user, "watch", "gates", group="sync.konductor.io")
        yield control_plane.mint_kubeconfig(user, namespace=namespace)
    finally:
        rest.request("DELETE", f"{RBAC}/clusterrolebindings/{user}")
        rest.request("DELETE", f"{RBAC}/clusterroles/{user}")


async def test_a_secret_reference_is_refused_once_not_watched_forever(
    kubeconfig: Path,
    namespace: str,
    operator_identity: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with Client(kubeconfig=kubeconfig, namespace=namespace) as admin:
        await admin.store.create(
            SECRET, namespace, {"metadata": {"name": "db"}, "stringData": {"password": "x"}}
        )
        condition = Condition.object(
            "db", api_version="v1", kind="Secret", object_name="db", expression="has(object.data)"
        )
        await Gate("needs-secret", client=admin).create([condition])
        async with gate_controller(operator_identity, namespace) as controller:
            obj = await until(admin, "needs-secret", message_has("db", "may not list secrets"))
            assert entry(obj, "db")["message"] == (
                f"waiting for Secret {namespace}/db: the operator may not list secrets "
                f"in namespace {namespace}"
            )
            # Re-judge the gate a few more times, as the 5 s recheck and resyncs would.
            for _ in range(3):
                passes = controller.passes
                controller.queue.add((namespace, "needs-secret"))
                with anyio.fail_after(20):
                    # The pass counter has no event to wait on; a bounded, short poll.
                    while controller.passes == passes:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
            assert not any(kind.plural == "secrets" for kind, _ in controller._ref_watches)
            assert controller.permissions.reviews == 1
            assert controller.permissions.logged == 1
    refusals = [r for r in caplog.records if "may not list secrets" in r.getMessage()]
    assert len(refusals) == 1
    # No watch was refused (and logged) over and over.
    assert not [r for r in caplog.records if r.name == "konductor_sdk.watch"]

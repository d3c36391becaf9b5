"""deploy/ against a real API server: every manifest passes a server-side dry run, and the
RBAC really is enough (and not more than needed) for the operator and for SDK users."""

from __future__ import annotations

import copy
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import yaml
from _operator_support import (
    await_until,
    ready_leader,
    start_operator,
    wait_for_event,
    watch_until,
)

from konductor_sdk import Client, ForbiddenError, Identity
from konductor_sdk._kernel.objects import SEMAPHORE
from konductor_sdk.semaphore import Semaphore
from konductor_sdk.testing import ClusterHandle
from konductor_sdk.testing._rest import RestClient

pytestmark = pytest.mark.anyio

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# kind -> (API path prefix, plural, namespaced)
PATHS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "CustomResourceDefinition": (
        "/apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        False,
    ),
    "ValidatingAdmissionPolicy": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicies",
        False,
    ),
    "ValidatingAdmissionPolicyBinding": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicybindings",
        False,
    ),
    "MutatingAdmissionPolicy": (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingadmissionpolicies",
        False,
    ),
    "MutatingAdmissionPolicyBinding": (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingadmissionpolicybindings",
        False,
    ),
}


def render() -> list[dict[str, Any]]:
    """What ``kubectl apply -k deploy/`` would send."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def collection(doc: dict[str, Any], namespace: str | None) -> str:
    _, plural, namespaced = PATHS[doc["kind"]]
    version = doc["apiVersion"]  # the document's own version (e.g. a beta policy API)
    prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
    if namespaced:
        return f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{prefix}/{plural}"


def apply(rest: RestClient, doc: dict[str, Any], *, dry_run: bool) -> tuple[int, Any]:
    """Create, or replace if it exists; with ``dryRun=All`` nothing is persisted."""
    ns = doc["metadata"].get("namespace")
    base = collection(doc, ns)
    query = "?dryRun=All" if dry_run else ""
    status, answer = rest.request("POST", base + query, doc)
    if status == 409:
        name = doc["metadata"]["name"]
        current = rest.expect("GET", f"{base}/{name}")
        body = copy.deepcopy(doc)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        status, answer = rest.request("PUT", f"{base}/{name}{query}", body)
    return status, answer


def relocate(doc: dict[str, Any], namespace: str, suffix: str) -> dict[str, Any]:
    """The document moved into the test's namespace; cluster-scoped names get ``suffix``
    (except CRDs and the Namespace itself) so parallel runs cannot collide."""
    doc = copy.deepcopy(doc)
    md = doc["metadata"]
    if PATHS[doc["kind"]][2]:
        md["namespace"] = namespace
    elif doc["kind"] not in ("CustomResourceDefinition", "Namespace"):
        md["name"] = f"{md['name']}-{suffix}"
    if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
        if doc["roleRef"]["kind"] == "ClusterRole":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
        for subject in doc["subjects"]:
            subject["namespace"] = namespace
    if doc["kind"] in ("ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicyBinding"):
        doc["spec"]["policyName"] = f"{doc['spec']['policyName']}-{suffix}"
    return doc


def test_every_rendered_manifest_passes_a_server_side_dry_run(
    control_plane: ClusterHandle, namespace: str
) -> None:
    docs = render()
    kinds = sorted({d["kind"] for d in docs})
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= set(kinds)
    assert {"CustomResourceDefinition", "Namespace"} <= set(kinds)
    rest = control_plane.rest()
    suffix = secrets.token_hex(3)
    failures = []
    for doc in docs:
        status, answer = apply(rest, relocate(doc, namespace, suffix), dry_run=True)
        if not 200 <= status < 300:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {status} {answer}")
    assert not failures, "\n".join(failures)
    # Dry run means nothing was persisted.
    status, _ = rest.request(
        "GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/konductor-operator-{suffix}"
    )
    assert status == 404


@attrs.frozen
class Identities:
    namespace: str
    operator: Path
    user: Path
    viewer: Path


@pytest.fixture
def rbac(control_plane: ClusterHandle) -> Iterator[Identities]:
    """The three ClusterRoles really applied (renamed), bound to minted identities:
    ``operator`` (the ServiceAccount), ``user`` and ``viewer`` (RoleBindings), in a
    namespace with a short name (a certificate CN holds at most 64 characters)."""
    rest = control_plane.rest()
    suffix = secrets.token_hex(3)
    namespace = control_plane.create_namespace(f"rbac-{suffix}")
    docs = [
        relocate(d, namespace, suffix)
        for d in render()
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    ]
    for role in ("konductor-user", "konductor-viewer"):
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": role, "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"{role}-{suffix}",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": role}
                ],
            }
        )
    created = []
    try:
        for doc in docs:
            status, answer = apply(rest, doc, dry_run=False)
            assert 200 <= status < 300, answer
            created.append(doc)
        sa = f"system:serviceaccount:{namespace}:konductor-operator"
        # The bindings are in force a moment after their writes: wait until the
        # authorizer applies each one, or a test's first request could be refused.
        for user, groups, verb in (
            (sa, ["system:serviceaccounts"], "watch"),
            ("konductor-user", [], "create"),
            ("konductor-viewer", [], "get"),
        ):
            control_plane.wait_allowed(
                user,
                verb,
                "semaphores",
                group="sync.konductor.io",
                namespace=namespace,
                groups=groups,
            )
        yield Identities(
            namespace=namespace,
            operator=control_plane.mint_kubeconfig(sa, ["system:serviceaccounts"], namespace),
            user=control_plane.mint_kubeconfig("konductor-user", [], namespace),
            viewer=control_plane.mint_kubeconfig("konductor-viewer", [], namespace),
        )
    finally:
        for doc in reversed(created):
            if not PATHS[doc["kind"]][2]:
                rest.request("DELETE", f"{collection(doc, None)}/{doc['metadata']['name']}")
        rest.request("DELETE", f"/api/v1/namespaces/{namespace}")


async def test_the_operator_role_is_enough_to_reap_and_report(
    rbac: Identities, kubeconfig: Path, tmp_path: Path
) -> None:
    namespace = rbac.namespace
    op = start_operator(rbac.operator, namespace, tmp_path, identity="sa-operator")
    try:
        await await_until(lambda: ready_leader(op), within=60, what="leading as the SA", op=op)
        name = f"rbac-{secrets.token_hex(2)}"
        async with Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("x")) as c:
            dead = await Semaphore(name, permits=1, client=c, ttl=2).acquire()
        async with Client(kubeconfig=kubeconfig, namespace=namespace) as admin:
            with anyio.fail_after(30):
                await watch_until(
                    admin,
                    SEMAPHORE,
                    namespace,
                    name,
                    lambda o: o is not None and dead.key not in o.status.get("holders", {}),
                )
                await wait_for_event(admin, namespace, name, "Reaped")
        assert op.metric("konductor_operator_events_total", result="failed") is None
        assert op.metric("konductor_operator_controller_restarts_total", controller="core") is None
    finally:
        op.stop()


async def test_user_role_can_acquire_and_viewer_role_can_only_look(rbac: Identities) -> None:
    namespace = rbac.namespace
    name = f"roles-{secrets.token_hex(2)}"
    async with Client(kubeconfig=rbac.user, namespace=namespace) as user:
        sem = Semaphore(name, permits=1, client=user, ttl=5)
        async with sem.hold() as permit:  # create, CAS grant, renewals, release
            assert permit.token == 1
        await sem.delete()
        await Semaphore(name, permits=1, client=user).create()
    async with Client(kubeconfig=rbac.viewer, namespace=namespace) as viewer:
        listed = await viewer.store.list(SEMAPHORE, namespace)
        assert [o.name for o in listed.items] == [name]
        with pytest.raises(ForbiddenError):
            await Semaphore(name, client=viewer, ttl=5).acquire_nowait()

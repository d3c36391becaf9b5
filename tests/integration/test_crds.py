"""The CRDs on the real API server: installed, served, validated, RBAC-guarded.

Per-kind behaviour is tested with each primitive; this file checks the common contract of
every kind in ``crds/`` and a table of invalid objects the server itself must reject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from konductor_sdk import Client, ForbiddenError, InvalidObjectError
from konductor_sdk._kernel.objects import GROUP, VERSION, ResourceKind
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import until_allowed

pytestmark = pytest.mark.anyio

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
CRDS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))}

# The smallest valid spec of each kind (a kind missing here fails the completeness test).
MINIMAL_SPEC: dict[str, dict[str, Any]] = {
    "Semaphore": {"permits": 2},
    "Mutex": {},
    "RWMutex": {},
    "Barrier": {"expected": 2},
    "Lease": {},
    "Gate": {"conditions": [{"name": "approved", "external": {}}]},
    "Once": {},
    "WaitGroup": {},
    "Session": {"holder": "h", "ttlSeconds": 30, "renewCount": 0},
    "Claim": {"target": {"kind": "Semaphore", "name": "s"}, "session": "s1", "holder": "h"},
}
# Participant kinds: written whole by their owner, no status subresource (docs/design.md).
PARTICIPANTS = {"Session", "Claim"}


async def minimal_spec(kind: str, client: Client) -> dict[str, Any]:
    """``MINIMAL_SPEC[kind]``, with what the admission policies want of its author: a Gate
    names its creator exactly as the API server knows the requesting user."""
    spec = dict(MINIMAL_SPEC[kind])
    if kind == "Gate":
        from konductor_sdk.gate import whoami

        me = await whoami(client)
        assert me is not None
        spec["creator"] = {"username": me["username"], "groups": me["groups"]}
    return spec


def kind_of(crd: dict[str, Any]) -> ResourceKind:
    names = crd["spec"]["names"]
    return ResourceKind(GROUP, VERSION, names["plural"], names["kind"])


def test_every_crd_follows_the_common_contract() -> None:
    assert CRDS, "no CRDs in crds/"
    for stem, crd in CRDS.items():
        spec = crd["spec"]
        assert spec["group"] == GROUP, stem
        assert spec["scope"] == "Namespaced", stem
        assert "konductor" in spec["names"].get("categories", []), stem
        assert spec["names"].get("shortNames"), stem
        served = [v for v in spec["versions"] if v["served"]]
        assert [v["name"] for v in served] == [VERSION], stem
        version = served[0]
        if spec["names"]["kind"] in PARTICIPANTS:
            assert "subresources" not in version, stem
        else:
            assert version["subresources"].get("status") == {}, stem
        assert version.get("additionalPrinterColumns"), stem
        assert spec["names"]["kind"] in MINIMAL_SPEC, f"add {stem} to MINIMAL_SPEC"


@pytest.mark.parametrize("stem", sorted(CRDS))
async def test_each_kind_can_be_created_and_read_back(stem: str, client: Client) -> None:
    kind = kind_of(CRDS[stem])
    spec = await minimal_spec(kind.kind, client)
    created = await client.store.create(
        kind, client.namespace, {"metadata": {"name": "x"}, "spec": spec}
    )
    read = await client.store.get(kind, client.namespace, "x")
    assert read.uid == created.uid
    for field, value in spec.items():
        assert read.spec[field] == value


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("Semaphore", {"permits": 0}, "spec.permits"),
    ("Semaphore", {"permits": -3}, "spec.permits"),
    ("Semaphore", {"permits": 2_000_000}, "spec.permits"),
    ("Semaphore", {}, "spec.permits"),
    ("Semaphore", {"permits": "four"}, "spec.permits"),
    ("Semaphore", {"permits": 1, "burst": -1}, "spec.burst"),
    ("Semaphore", {"permits": 1, "burstSeconds": 0}, "spec.burstSeconds"),
    ("Lease", {"ttlSeconds": 0}, "spec.ttlSeconds"),
    ("Lease", {"ttlSeconds": 100_000}, "spec.ttlSeconds"),
    ("RWMutex", {"maxReaders": 0}, "spec.maxReaders"),
    ("Gate", {"conditions": [], "match": "some"}, "spec.match"),
    ("Gate", {"match": "all"}, "spec.conditions"),
    (
        "Gate",
        {"conditions": [{"name": "a", "external": {}}], "timeoutSeconds": 0},
        "spec.timeoutSeconds",
    ),
    ("Barrier", {"expected": 0}, "spec.expected"),
    ("Barrier", {"expected": 2, "quorum": 3}, "quorum"),
]


@pytest.mark.parametrize(
    ("kind_name", "spec", "field"),
    INVALID,
    ids=[f"{k}-{f}-{i}" for i, (k, _, f) in enumerate(INVALID)],
)
async def test_invalid_objects_are_rejected_naming_the_field(
    kind_name: str, spec: dict[str, Any], field: str, client: Client
) -> None:
    stems = [s for s, crd in CRDS.items() if crd["spec"]["names"]["kind"] == kind_name]
    if not stems:
        pytest.fail(f"no CRD for {kind_name} in crds/")
    kind = kind_of(CRDS[stems[0]])
    with pytest.raises(InvalidObjectError) as info:
        await client.store.create(
            kind, client.namespace, {"metadata": {"name": "bad"}, "spec": spec}
        )
    assert field in str(info.value)
    # Nothing half-written: the object does not exist.
    listed = await client.store.list(kind, client.namespace)
    assert [o.name for o in listed.items] == []


async def test_a_user_without_a_role_is_denied_and_a_role_lets_it_in(
    control_plane: ClusterHandle, client: Client, namespace: str, make_client: Any
) -> None:
    if not control_plane.can_mint:
        pytest.skip("minting users needs the local control plane")
    kubeconfig = control_plane.mint_kubeconfig("alice", ["team-a"])
    alice = make_client("alice", kubeconfig=kubeconfig)
    await alice.connect()
    kind = kind_of(CRDS["semaphore"])
    body = {"metadata": {"name": "s"}, "spec": {"permits": 1}}
    with pytest.raises(ForbiddenError):
        await alice.store.create(kind, namespace, body)
    with pytest.raises(ForbiddenError):
        await alice.store.list(kind, namespace)

    rbac = ResourceKind("rbac.authorization.k8s.io", "v1", "roles", "Role")
    binding = ResourceKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
    await client.store.create(
        rbac,
        namespace,
        {
            "metadata": {"name": "sem-user"},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["semaphores", "semaphores/status"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch"],
                }
            ],
        },
    )
    await client.store.create(
        binding,
        namespace,
        {
            "metadata": {"name": "team-a"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "sem-user",
            },
            "subjects": [
                {"kind": "Group", "name": "team-a", "apiGroup": "rbac.authorization.k8s.io"}
            ],
        },
    )
    await until_allowed(control_plane, namespace, "semaphores", user="alice", groups=["team-a"])
    created = await alice.store.create(kind, namespace, body)
    assert created.name == "s"
    # The role is namespaced: alice is still a stranger everywhere else.
    with pytest.raises(ForbiddenError):
        await alice.store.list(kind, "default")

"""``koncli create -f`` is all or nothing (a server-side dry run of every item first), shows
the server's warnings, reports unknown fields, refuses a Gate with invalid CEL before
anything is written, and records ``spec.creator`` so deploy/'s gate-creator policy admits
its Gates."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from _cli_support import koncli, koncli_env

from konductor_sdk import Client, ForbiddenError, Identity, NotFoundError
from konductor_sdk._kernel.objects import GATE, MUTEX, SEMAPHORE, ResourceKind
from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VAP = ResourceKind(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicies",
    "ValidatingAdmissionPolicy",
    namespaced=False,
)
VAP_BINDING = ResourceKind(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicybindings",
    "ValidatingAdmissionPolicyBinding",
    namespaced=False,
)
ROLE = ResourceKind("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDING = ResourceKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")


@pytest.fixture
def env(kubeconfig: Path, namespace: str, tmp_path: Path) -> dict[str, str]:
    return koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)


@pytest.fixture
async def sdk(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="test-sdk")
    ) as client:
        yield client


async def exists(sdk: Client, kind: ResourceKind, name: str) -> bool:
    try:
        await sdk.store.get(kind, sdk.namespace, name)
    except NotFoundError:
        return False
    return True


def write(tmp_path: Path, *docs: dict[str, Any]) -> str:
    path = tmp_path / f"{secrets.token_hex(3)}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


GOOD = {"kind": "Mutex", "metadata": {"name": "fine"}}


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (
            {
                "kind": "Semaphore",
                "metadata": {"name": "typo"},
                "spec": {"permits": 2, "permitz": 3},
            },
            'unknown field "spec.permitz"',
        ),
        ({"kind": "Semaphore", "metadata": {"name": "zero"}, "spec": {"permits": 0}}, "permits"),
        (
            {"kind": "Mutex", "metadata": {"name": "extra", "colour": "red"}},
            'unknown field "metadata.colour"',
        ),
    ],
)
async def test_one_refused_item_means_nothing_is_created(
    env: dict[str, str], sdk: Client, tmp_path: Path, bad: dict[str, Any], says: str
) -> None:
    done = await koncli(env, "create", "-f", write(tmp_path, GOOD, bad), "-o", "json")
    assert done.code == 1, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["name"], r["result"]) for r in rows] == [
        ("fine", "failed"),
        (bad["metadata"]["name"], "failed"),
    ]
    assert rows[0]["message"] == "not created: item 2 was refused (dry run passed)"
    assert says in rows[1]["message"]
    assert not await exists(sdk, MUTEX, "fine")


async def test_an_existing_item_fails_the_file_unless_skip_existing(
    env: dict[str, str], sdk: Client, tmp_path: Path
) -> None:
    await sdk.store.create(MUTEX, sdk.namespace, {"metadata": {"name": "old"}, "spec": {}})
    path = write(tmp_path, {"kind": "Mutex", "metadata": {"name": "old"}}, GOOD)
    refused = await koncli(env, "create", "-f", path)
    assert refused.code == 1
    assert not await exists(sdk, MUTEX, "fine")
    skipped = await koncli(env, "create", "-f", path, "--skip-existing", "-o", "json")
    assert skipped.code == 0, skipped.stderr
    assert [r["result"] for r in json.loads(skipped.stdout)] == ["unchanged", "created"]
    assert await exists(sdk, MUTEX, "fine")


async def test_server_warnings_are_shown(env: dict[str, str], sdk: Client, tmp_path: Path) -> None:
    warned = {
        "kind": "Semaphore",
        "metadata": {"name": "warned", "finalizers": ["unqualified"]},
        "spec": {"permits": 1},
    }
    done = await koncli(env, "create", "-f", write(tmp_path, warned), "-o", "json")
    assert done.code == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["result"] == "created"
    assert any("finalizer" in w for w in row["warnings"]), row
    assert f"koncli: warning: semaphore {sdk.namespace}/warned: " in done.stderr
    assert done.stderr.count("koncli: warning:") == len(row["warnings"])  # shown once
    assert await exists(sdk, SEMAPHORE, "warned")


async def test_a_gate_with_invalid_cel_is_refused_before_anything_is_written(
    env: dict[str, str], sdk: Client, tmp_path: Path
) -> None:
    gate = {
        "kind": "Gate",
        "metadata": {"name": "cel"},
        "spec": {
            "conditions": [
                {
                    "name": "ready",
                    "object": {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "x",
                        "expression": "object.data.ready ==",
                    },
                }
            ]
        },
    }
    done = await koncli(env, "create", "-f", write(tmp_path, GOOD, gate))
    assert done.code == 2
    assert "item 2 (Gate cel): spec.conditions[0].object.expression is not valid CEL" in done.stderr
    assert not await exists(sdk, MUTEX, "fine")
    assert not await exists(sdk, GATE, "cel")


async def test_gates_record_their_creator_as_the_policy_requires(
    control_plane: ClusterHandle,
    sdk: Client,
    namespace: str,
    tmp_path: Path,
) -> None:
    # The gate-creator policy (policies/gate-creator.yaml) is installed with the CRDs.
    rules = [
        {
            "apiGroups": ["sync.konductor.io"],
            "resources": ["gates"],
            "verbs": ["get", "list", "watch", "create"],
        }
    ]
    await sdk.store.create(ROLE, namespace, {"metadata": {"name": "gates"}, "rules": rules})
    await sdk.store.create(
        ROLE_BINDING,
        namespace,
        {
            "metadata": {"name": "gates"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gates"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}
            ],
        },
    )
    # Until the binding is in force, RBAC's 403 would pass for the policy's refusal below.
    control_plane.wait_allowed(
        "carol", "create", "gates", group=GATE.group, namespace=namespace, groups=["team"]
    )
    carol = control_plane.mint_kubeconfig("carol", ["team"], namespace)
    async with Client(kubeconfig=carol, namespace=namespace, identity=Identity("c")) as c:
        with anyio.fail_after(30):
            while True:  # a new policy takes a moment to be enforced: until it refuses a lie
                lie = {
                    "metadata": {"name": "lie"},
                    "spec": {"conditions": [{"name": "x", "external": {}}]},
                }
                try:
                    await c.store.create(GATE, namespace, lie, dry_run=True)  # type: ignore[call-arg]
                except ForbiddenError:
                    break
                await anyio.sleep(0.2)

    gate = {
        "kind": "Gate",
        "metadata": {"name": "release"},
        # Someone else's creator (say, from get -o yaml) is replaced by the writer.
        "spec": {"creator": {"username": "admin"}, "conditions": [{"name": "qa", "external": {}}]},
    }
    env = koncli_env(carol, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)
    done = await koncli(env, "create", "-f", write(tmp_path, gate))
    assert done.code == 0, done.stdout + done.stderr
    created = await sdk.store.get(GATE, namespace, "release")
    assert created.spec["creator"] == {
        "username": "carol",
        "groups": ["team", "system:authenticated"],
    }

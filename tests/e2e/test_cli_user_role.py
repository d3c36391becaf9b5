"""Every verb docs/cli.md documents works for a user bound to deploy/'s ``konductor-user``.

Waits carry ``--timeout`` (there is no operator here to reap a forgotten entry), so a
refused or stuck step fails its line instead of the whole test.

The ClusterRole is read from deploy/ (wherever it is defined there), applied under a
unique name, and bound in the test's namespace to a minted user; then every documented
command runs as that user, and each must succeed. A failure lists every verb the role
does not allow, not just the first.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _cli_support import Result, koncli, koncli_env

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import ResourceKind
from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CLUSTER_ROLE = ResourceKind(
    "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
)
ROLE_BINDING = ResourceKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")


def deployed_role(name: str) -> dict[str, Any]:
    """The ClusterRole ``name`` as deploy/ defines it (any YAML file under deploy/)."""
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                isinstance(doc, dict)
                and doc.get("kind") == "ClusterRole"
                and doc.get("metadata", {}).get("name") == name
            ):
                return copy.deepcopy(doc)
    raise AssertionError(f"deploy/ defines no ClusterRole {name}")


@pytest.fixture
async def user_env(
    control_plane: ClusterHandle, kubeconfig: Path, namespace: str, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    role = deployed_role("konductor-user")
    role_name = f"konductor-user-{secrets.token_hex(3)}"
    role["metadata"] = {"name": role_name}
    async with Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("a")) as admin:
        await admin.store.create(CLUSTER_ROLE, None, role)
        try:
            await admin.store.create(
                ROLE_BINDING,
                namespace,
                {
                    "metadata": {"name": "konductor-user"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role_name,
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}
                    ],
                },
            )
            control_plane.wait_allowed(
                "dev",
                "create",
                "semaphores",
                group="sync.konductor.io",
                namespace=namespace,
                groups=["developers"],
            )
            user = control_plane.mint_kubeconfig("dev", ["developers"], namespace)
            yield koncli_env(user, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)
        finally:
            await admin.store.delete(CLUSTER_ROLE, None, role_name)


@pytest.mark.timeout(600)  # ~70 koncli processes on a shared machine
async def test_every_documented_verb_works_for_a_konductor_user(
    user_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    failures: list[str] = []

    async def ok(*args: str, env: dict[str, str] | None = None) -> Result:
        done = await koncli(env or user_env, *args)
        if done.code != 0:
            failures.append(f"koncli {' '.join(args)}: exit {done.code}: {done.stderr.strip()}")
        return done

    # Bulk create (all or nothing: dry run, then create) of one object of every kind.
    manifests = tmp_path / "all.yaml"
    manifests.write_text(
        yaml.safe_dump_all(
            [
                {
                    "kind": "Semaphore",
                    "metadata": {"name": "bulk-sem", "labels": {"team": "a"}},
                    "spec": {"permits": 2},
                },
                {"kind": "Mutex", "metadata": {"name": "bulk-mutex", "labels": {"team": "a"}}},
                {"kind": "RWMutex", "metadata": {"name": "bulk-rw"}},
                {"kind": "Lease", "metadata": {"name": "bulk-lease"}, "spec": {"ttlSeconds": 10}},
                {"kind": "Barrier", "metadata": {"name": "bulk-bar"}, "spec": {"expected": 2}},
                {
                    "kind": "Gate",
                    "metadata": {"name": "bulk-gate"},
                    "spec": {"conditions": [{"name": "qa", "external": {}}]},
                },
                {"kind": "Once", "metadata": {"name": "bulk-once"}},
                {"kind": "WaitGroup", "metadata": {"name": "bulk-wg"}},
            ]
        )
    )
    await ok("create", "-f", str(manifests))

    # semaphore
    await ok("semaphore", "create", "sem", "--permits", "3")
    grant = await ok("semaphore", "acquire", "sem", "--ttl", "60", "--timeout", "60", "-o", "json")
    nowait = await ok("semaphore", "acquire", "sem", "--ttl", "60", "--nowait")
    key = json.loads(grant.stdout)["key"] if grant.code == 0 else "none"
    await ok("semaphore", "release", "sem", key, nowait.stdout.strip() or "none")
    await ok("semaphore", "set-permits", "sem", "4")
    pod = user_env | {"POD_NAME": "p", "POD_NAMESPACE": namespace, "POD_UID": "u-1"}
    await ok("semaphore", "acquire", "sem", "--for-pod", "--timeout", "60", env=pod)
    await ok("semaphore", "release", "sem", "p:u-1")
    # mutex
    await ok("mutex", "create", "mtx")
    lock = await ok("mutex", "lock", "mtx", "--ttl", "60", "--timeout", "60")
    await ok("mutex", "unlock", "mtx", lock.stdout.strip() or "none")
    other = await ok("mutex", "acquire", "mtx2", "--ttl", "60", "--timeout", "60")
    await ok("mutex", "release", "mtx2", other.stdout.strip() or "none")
    # rwmutex
    await ok("rwmutex", "create", "rw", "--max-readers", "4")
    read = await ok("rwmutex", "lock", "rw", "--read", "--ttl", "60", "--timeout", "60")
    await ok("rwmutex", "unlock", "rw", read.stdout.strip() or "none")
    write = await ok("rwmutex", "lock", "rw", "--write", "--ttl", "60", "--timeout", "60")
    await ok("rwmutex", "release", "rw", write.stdout.strip() or "none")
    # lease
    await ok("lease", "create", "lease", "--ttl", "10", "--exist-ok")
    held = await ok("lease", "acquire", "lease", "--ttl", "10", "--timeout", "60")
    await ok("lease", "release", "lease", held.stdout.strip() or "none")
    await ok("lease", "elect", "lease", "--ttl", "5", "--timeout", "60", "--", "true")
    # barrier
    await ok("barrier", "create", "bar", "--expected", "2")
    await ok("barrier", "arrive", "bar", "--ttl", "60")
    await ok("barrier", "wait", "bar", "--timeout", "60")
    await ok("barrier", "wait", "solo", "--expected", "1", "--timeout", "60")
    await ok("barrier", "reset", "bulk-bar")
    await ok("barrier", "set-expected", "bulk-bar", "3")
    # gate
    await ok("gate", "create", "gate", "--external", "approved")
    await ok("gate", "mark", "gate", "approved", "-m", "ok")
    await ok("gate", "wait", "gate", "--timeout", "60")
    # once
    await ok("once", "run", "once", "--timeout", "60", "--", "true")
    await ok("once", "reset", "once")
    # waitgroup
    await ok("waitgroup", "add", "wg", "2")
    await ok("waitgroup", "add", "wg", "-1")
    await ok("waitgroup", "done", "wg")
    await ok("waitgroup", "wait", "wg", "--timeout", "60")
    # koncli run with every kind of hold
    await ok(
        "run", "-q", "--semaphore", "sem:2", "--mutex", "mtx", "--read", "rw", "--lease", "lease",
        "--barrier", "run-bar:1", "--gate", "gate", "--timeout", "60", "--", "true",
    )  # fmt: skip
    # generic verbs on every kind, with the kinds' short names too
    for kind, name in [
        ("semaphore", "sem"),
        ("mutex", "mtx"),
        ("rwmutex", "rw"),
        ("lease", "lease"),
        ("barrier", "bar"),
        ("gate", "gate"),
        ("once", "once"),
        ("waitgroup", "wg"),
    ]:
        await ok(kind, "get", name, "-o", "yaml")
        await ok(kind, "list")
        await ok(kind, "list", "-l", "team=a")
        await ok(kind, "status", name)
    await ok("sem", "list")
    await ok("watch", "--once")
    await ok("watch", "--once", "-o", "json")
    # bulk release and delete
    records = tmp_path / "held.json"
    again = await ok(
        "semaphore", "acquire", "bulk-sem", "--ttl", "60", "--timeout", "60", "-o", "json"
    )
    records.write_text(again.stdout if again.code == 0 else "[]")
    await ok("release", "-f", str(records))
    await ok("mutex", "lock", "bulk-mutex", "--ttl", "60", "--timeout", "60")
    await ok("release", "mutex", "-l", "team=a", "--all-holders")
    await ok("delete", "semaphore", "-l", "team=a")
    await ok("delete", "-f", str(manifests), "--ignore-not-found")
    for kind, name in [
        ("semaphore", "sem"),
        ("mutex", "mtx"),
        ("gate", "gate"),
        ("waitgroup", "wg"),
    ]:
        await ok(kind, "delete", name)
    # no cluster access, documented all the same
    await ok("config", "view")
    await ok("config", "path")
    await ok("completion", "bash")

    assert not failures, "konductor-user cannot:\n" + "\n".join(failures)

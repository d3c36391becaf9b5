"""Minted users bound to the project's `konductor-user` role, for ownership tests."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import anyio
import yaml

from konductor_sdk.testing import ClusterHandle

ROOT = Path(__file__).resolve().parents[2]


def _user_role() -> dict[str, object]:
    for doc in yaml.safe_load_all((ROOT / "deploy" / "rbac" / "user-roles.yaml").read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == "konductor-user":
            return dict(doc)
    raise AssertionError("deploy/rbac/user-roles.yaml has no konductor-user ClusterRole")


async def bind_user(control_plane: ClusterHandle, namespace: str, user: str) -> Path:
    """A kubeconfig for ``user``, allowed in ``namespace`` exactly what ``konductor-user``
    allows (a Role with its rules, bound to the user)."""
    rest = control_plane.rest()
    role = _user_role()
    rules = role["rules"]
    name = f"konductor-user-{user}"
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    rest.request(
        "POST",
        f"{base}/roles",
        {"metadata": {"name": name, "namespace": namespace}, "rules": rules},
    )
    rest.request(
        "POST",
        f"{base}/rolebindings",
        {
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    await until_allowed(control_plane, namespace, "semaphores", user=user)
    return control_plane.mint_kubeconfig(user, namespace=namespace)


async def until_allowed(
    control_plane: ClusterHandle,
    namespace: str,
    resource: str,
    *,
    user: str,
    groups: Sequence[str] = (),
    verb: str = "create",
    group: str = "sync.konductor.io",
) -> None:
    """Wait until the API server's authorizer lets ``user`` ``verb`` ``resource`` of
    ``group`` in ``namespace`` (see :meth:`ClusterHandle.wait_allowed`), without
    blocking the event loop."""
    wait = functools.partial(
        control_plane.wait_allowed,
        user,
        verb,
        resource,
        group=group,
        namespace=namespace,
        groups=groups,
    )
    await anyio.to_thread.run_sync(wait)

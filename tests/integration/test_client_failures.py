"""Waits raise instead of hanging when the API server is unreachable or the user may not
list/watch: ``UnreachableError`` once the client's retry budget is spent (after the store's
own quick retries), ``ForbiddenError`` at once. Nothing is left behind in a queue.

The deadlines below only turn a hang (the bug) into a failure; nothing is timed.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from konductor_sdk import (
    APIError,
    Barrier,
    Client,
    ForbiddenError,
    Identity,
    Lease,
    Mutex,
    Semaphore,
    UnreachableError,
)
from konductor_sdk._kernel.objects import MUTEX, ResourceKind
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import until_allowed

pytestmark = pytest.mark.anyio

ROLE = ResourceKind("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDING = ResourceKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when we return: connections are refused


@pytest.fixture
def dead_kubeconfig(kubeconfig: Path, tmp_path: Path) -> Path:
    """The test cluster's kubeconfig, pointed at a port nobody listens on."""
    doc = yaml.safe_load(kubeconfig.read_text())
    for cluster in doc["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{closed_port()}"
    path = tmp_path / "dead-kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


WAITS: dict[str, Callable[[Client], Awaitable[Any]]] = {
    "Mutex.acquire": lambda c: Mutex("m", client=c).acquire(ttl=30),
    "Semaphore.acquire": lambda c: Semaphore("s", permits=1, client=c).acquire(),
    "Lease.acquire": lambda c: Lease("l", ttl=5, client=c).acquire(),
    "Barrier.wait": lambda c: Barrier("b", expected=2, client=c).wait(),
}


@pytest.mark.parametrize("wait", list(WAITS))
async def test_waits_raise_when_the_server_is_unreachable(dead_kubeconfig: Path, wait: str) -> None:
    async with Client(
        kubeconfig=dead_kubeconfig, namespace="x", identity=Identity("t"), retry_budget=5
    ) as client:
        with anyio.fail_after(120), pytest.raises(APIError) as info:
            await WAITS[wait](client)
    message = str(info.value)
    assert "cannot connect to the API server https://127.0.0.1:" in message
    assert "ConnectionKey" not in message
    if isinstance(info.value, UnreachableError):
        assert info.value.budget == 5


async def test_a_synced_wait_raises_once_the_server_goes_away(
    kubeconfig: Path, namespace: str, dead_kubeconfig: Path
) -> None:
    """The shared watch was fine, then the server vanished: the waiter gets UnreachableError."""
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("a"), retry_budget=0
    ) as holder_client:
        held = await Mutex("m", client=holder_client).acquire(ttl=60)
        async with Client(
            kubeconfig=kubeconfig, namespace=namespace, identity=Identity("b"), retry_budget=0
        ) as client:
            watch = await client.watch(MUTEX, namespace)
            # Point the waiter's store at the dead port: the next watch request fails.
            dead = Client(kubeconfig=dead_kubeconfig, namespace=namespace, identity=Identity("b"))
            await dead.connect()
            try:
                watch._store = dead.store  # test seam: the same KindWatch, a server gone away
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch.run)  # a second runner that will fail at once
                    with anyio.fail_after(60), pytest.raises(UnreachableError):
                        await wait_for_changes(watch, "m")
                    tg.cancel_scope.cancel()
            finally:
                await dead.aclose()
        await held.release()


async def wait_for_changes(watch: KindWatch, name: str) -> None:
    while True:
        changed = watch.next_change(name)
        await changed.wait()


@pytest.fixture
async def limited_user(control_plane: ClusterHandle, kubeconfig: Path, namespace: str) -> Path:
    """A user who may get/create/update mutexes (and their status) but not list/watch."""
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("admin")
    ) as admin:
        await admin.store.create(
            ROLE,
            namespace,
            {
                "metadata": {"name": "no-watch"},
                "rules": [
                    {
                        "apiGroups": ["sync.konductor.io"],
                        "resources": ["mutexes", "mutexes/status"],
                        "verbs": ["get", "create", "update", "patch"],
                    }
                ],
            },
        )
        await admin.store.create(
            ROLE_BINDING,
            namespace,
            {
                "metadata": {"name": "no-watch"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "no-watch",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "no-watch"}
                ],
            },
        )
    await until_allowed(control_plane, namespace, "mutexes", user="no-watch")
    return control_plane.mint_kubeconfig("no-watch", [], namespace)


async def test_a_user_who_may_not_watch_gets_forbidden_at_once(
    limited_user: Path, kubeconfig: Path, namespace: str
) -> None:
    async with Client(
        kubeconfig=limited_user, namespace=namespace, identity=Identity("u")
    ) as client:
        with anyio.fail_after(60), pytest.raises(ForbiddenError, match="cannot list"):
            await Mutex("m", client=client).acquire(ttl=30)
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("admin")
    ) as admin:
        try:
            obj = await admin.store.get(MUTEX, namespace, "m")
        except APIError:
            return  # not even created
        assert not obj.status.get("waiters")
        assert not obj.status.get("holders")


async def test_a_user_without_any_role_gets_forbidden(
    control_plane: ClusterHandle, namespace: str
) -> None:
    nobody = control_plane.mint_kubeconfig("nobody", [], namespace)
    async with Client(kubeconfig=nobody, namespace=namespace, identity=Identity("n")) as client:
        for wait in WAITS.values():
            with anyio.fail_after(60), pytest.raises(ForbiddenError):
                await wait(client)

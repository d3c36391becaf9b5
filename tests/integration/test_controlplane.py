"""The local control plane is a real Kubernetes API: versions, CRDs, optimistic concurrency,
RBAC, and a teardown that leaves no process, port or directory behind."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from konductor_sdk.testing import ClusterHandle, ControlPlaneError, LocalControlPlane
from konductor_sdk.testing._process import port_is_free
from konductor_sdk.testing.pytest_plugin import EXISTING_CLUSTER_ENV

existing_cluster = pytest.mark.skipif(
    bool(os.environ.get(EXISTING_CLUSTER_ENV)),
    reason="checks properties of the local control plane, not of an existing cluster",
)


def _alive(pid: int) -> bool:
    # A zombie counts as dead: in a container, PID 1 may never reap the orphans.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no procfs (macOS): fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in {"Z", "X"}


def _throwaway_crd(directory: Path, group: str) -> None:
    directory.mkdir()
    (directory / "widget.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata:
              name: widgets.{group}
            spec:
              group: {group}
              scope: Namespaced
              names: {{plural: widgets, singular: widget, kind: Widget}}
              versions:
                - name: v1
                  served: true
                  storage: true
                  schema:
                    openAPIV3Schema:
                      type: object
                      properties:
                        spec:
                          type: object
                          properties:
                            size: {{type: integer, minimum: 1}}
            """
        )
    )


@existing_cluster
@pytest.mark.anyio
async def test_version_is_kubernetes_1_36(api_client: client.ApiClient) -> None:
    info = await client.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.36."), info
    assert (info.major, info.minor) == ("1", "36")


@pytest.mark.anyio
async def test_namespace_fixture_creates_an_active_namespace(
    api_client: client.ApiClient, namespace: str
) -> None:
    created = await client.CoreV1Api(api_client).read_namespace(namespace)
    assert created.status.phase == "Active"


@pytest.mark.anyio
async def test_crd_install_then_object_roundtrip_and_validation(
    control_plane: ClusterHandle, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    group = f"t{os.urandom(4).hex()}.test.konductor.io"  # cluster-scoped: unique per run
    _throwaway_crd(tmp_path / "crds", group)
    names = await anyio.to_thread.run_sync(control_plane.install_crds, tmp_path / "crds")
    assert names == [f"widgets.{group}"]

    objects = client.CustomObjectsApi(api_client)
    body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}}
    await objects.create_namespaced_custom_object(
        group, "v1", namespace, "widgets", {**body, "spec": {"size": 3}}
    )
    read = await objects.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")
    assert read["spec"] == {"size": 3}

    # The schema is enforced server-side: this is an apiserver, not a fake.
    with pytest.raises(ApiException) as invalid:
        await objects.create_namespaced_custom_object(
            group, "v1", namespace, "widgets", {**body, "spec": {"size": 0}}
        )
    assert invalid.value.status == 422


def _config_map(name: str, value: str, resource_version: str | None = None) -> client.V1ConfigMap:
    meta = client.V1ObjectMeta(name=name, resource_version=resource_version)
    return client.V1ConfigMap(metadata=meta, data={"n": value})


@pytest.mark.anyio
async def test_update_with_stale_resource_version_conflicts(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    created = await core.create_namespaced_config_map(namespace, _config_map("cm", "1"))
    stale = created.metadata.resource_version
    fresh = await core.replace_namespaced_config_map("cm", namespace, _config_map("cm", "2", stale))
    assert fresh.metadata.resource_version != stale

    with pytest.raises(ApiException) as conflict:
        await core.replace_namespaced_config_map("cm", namespace, _config_map("cm", "3", stale))
    assert conflict.value.status == 409


@pytest.mark.anyio
async def test_minted_user_is_subject_to_rbac(
    control_plane: ClusterHandle, api_client: client.ApiClient, namespace: str
) -> None:
    if not control_plane.can_mint:
        pytest.skip("cannot mint client certificates for an existing cluster")
    minted = control_plane.mint_kubeconfig("alice", ["konductor-readers"], namespace=namespace)

    # The admin (system:masters) may list; alice, with no binding, is forbidden.
    await client.CoreV1Api(api_client).list_namespaced_config_map(namespace)
    async with control_plane.api_client(minted) as alice_api:
        alice = client.CoreV1Api(alice_api)
        with pytest.raises(ApiException) as denied:
            await alice.list_namespaced_config_map(namespace)
        assert denied.value.status == 403
        assert 'User "alice"' in json.loads(denied.value.body or "{}")["message"]
        # Asked before any binding, the authorizer keeps saying no, and the wait says so.
        with pytest.raises(TimeoutError, match=r"alice may still not list configmaps .* 0\.3 s"):
            control_plane.wait_allowed(
                "alice", "list", "configmaps", namespace=namespace, timeout=0.3
            )

        # Bind the *group* from the certificate: proves O= entries become groups.
        rbac = client.RbacAuthorizationV1Api(api_client)
        rbac_group = "rbac.authorization.k8s.io"
        role = client.V1Role(
            metadata=client.V1ObjectMeta(name="read-cm"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])],
        )
        binding = client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="readers"),
            role_ref=client.V1RoleRef(api_group=rbac_group, kind="Role", name="read-cm"),
            subjects=[
                client.RbacV1Subject(api_group=rbac_group, kind="Group", name="konductor-readers")
            ],
        )
        await rbac.create_namespaced_role(namespace, role)
        await rbac.create_namespaced_role_binding(namespace, binding)
        # The RBAC authorizer reads from an informer cache: wait until it applies the
        # binding, then the very request it was asked about goes through.
        allowed = functools.partial(
            control_plane.wait_allowed,
            "alice",
            "list",
            "configmaps",
            namespace=namespace,
            groups=["konductor-readers"],
        )
        await anyio.to_thread.run_sync(allowed)
        assert await _allowed(alice.list_namespaced_config_map(namespace))
        # Still nothing outside the grant.
        with pytest.raises(ApiException) as other_verb:
            await alice.create_namespaced_config_map(namespace, _config_map("x", "1"))
        assert other_verb.value.status == 403


async def _allowed(request: Awaitable[object]) -> bool:
    try:
        await request
    except ApiException as error:
        if error.status != 403:
            raise
        return False
    return True


def _assert_gone(pids: dict[str, int], ports: dict[str, int], directory: Path) -> None:
    assert pids
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert all(port_is_free(port) for port in ports.values()), ports
    assert not directory.exists()


def test_sync_context_manager_cleans_up_even_when_the_body_fails() -> None:
    plane = LocalControlPlane(crd_dirs=())
    seen: dict[str, object] = {}

    def body() -> None:
        with plane:
            seen.update(pids=plane.pids, ports=plane.ports, directory=plane.directory)
            seen["readyz"] = plane.handle.rest().request("GET", "/readyz")[0]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert seen["readyz"] == 200
    pids, ports, directory = seen["pids"], seen["ports"], seen["directory"]
    assert isinstance(pids, dict)
    assert isinstance(ports, dict)
    assert isinstance(directory, Path)
    assert set(pids) == {"etcd", "kube-apiserver"}
    _assert_gone(pids, ports, directory)
    assert repr(plane) == "<LocalControlPlane stopped>"


@pytest.mark.anyio
async def test_async_context_manager_cleans_up() -> None:
    async with LocalControlPlane(crd_dirs=()) as plane:
        pids, ports, directory = plane.pids, plane.ports, plane.directory
        assert plane.create_namespace("probe") == "probe"
        async with plane.api_client() as api:
            names = [
                ns.metadata.name for ns in (await client.CoreV1Api(api).list_namespace()).items
            ]
        assert "probe" in names
    _assert_gone(pids, ports, directory)


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    # The parent is SIGKILLed: no atexit, no finally. Only PR_SET_PDEATHSIG is left to act.
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux-only")
    script = textwrap.dedent(
        """\
        import json, sys, time
        from konductor_sdk.testing import LocalControlPlane
        plane = LocalControlPlane(crd_dirs=()).start()
        print(json.dumps(plane.pids), flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as parent:
        try:
            assert parent.stdout is not None
            pids: dict[str, int] = json.loads(parent.stdout.readline())
            assert pids
            assert all(_alive(pid) for pid in pids.values())
        finally:
            parent.kill()
    # The kernel delivers SIGKILL to the children right away; reaping may lag a moment.
    for _ in range(200):
        if not any(_alive(pid) for pid in pids.values()):
            break
        time.sleep(0.05)
    assert not [pid for pid in pids.values() if _alive(pid)]


def test_startup_failure_reports_the_log_tail() -> None:
    plane = LocalControlPlane(crd_dirs=(), apiserver_args=["--no-such-flag=1"])
    with pytest.raises(ControlPlaneError, match="kube-apiserver exited") as failure:
        plane.start()
    assert "no-such-flag" in str(failure.value)
    assert repr(plane) == "<LocalControlPlane stopped>"

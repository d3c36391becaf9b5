"""The SDK, koncli and the operator run exactly as they would in pods, as far as a machine
without a kubelet allows:

* in-cluster configuration: ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` and,
  at ``/var/run/secrets/kubernetes.io/serviceaccount/``, a ServiceAccount token from the
  TokenRequest API (bound to the Pod object, as the kubelet's projected tokens are), the
  cluster CA and the namespace file. kubernetes_asyncio's in-cluster loader reads those
  fixed paths (overridable only by arguments, not by the environment), so each process
  runs in its own mount namespace (``unshare --user --map-root-user --mount``) where that
  directory is bind-mounted: no SDK change, no test-only switch;
* identity from the downward-API variables ``POD_NAME``/``POD_NAMESPACE``/``POD_UID``;
* RBAC: the workers' ServiceAccount bound to the generated ``konductor-user`` role only,
  the operator's to its generated ClusterRole and election Role only.

The Pod objects exist but never run (no kubelet). A worker holds a Semaphore permit (SDK,
public API only: ``from konductor_sdk import Semaphore, Client``), another takes one for
its pod with ``koncli semaphore acquire --for-pod``; deleting the Pod objects makes the
operator, running as its own ServiceAccount, release both permits.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import yaml
from _operator_support import FAST_ELECTION, OperatorProcess, await_until, logged, watch_until

from konductor_sdk import Client, NotFoundError
from konductor_sdk._kernel.objects import LEASE, SEMAPHORE, SESSION
from konductor_sdk.testing import ClusterHandle
from konductor_sdk.testing._cluster import PodFiles
from konductor_sdk.testing._process import free_port

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SERVICE_ACCOUNT_DIR = "/run/secrets/kubernetes.io/serviceaccount"  # /var/run -> /run
BIN = Path(sys.executable).parent

WORKER = """
import sys

import anyio

from konductor_sdk import Client, Semaphore


async def main() -> None:
    async with Client() as client:  # in-cluster config, identity from the downward API
        permit = await Semaphore("gpu", permits=2, client=client, ttl=600).acquire()
        print(f"HELD {permit.key} {client.identity.holder}", flush=True)
        await anyio.sleep_forever()


anyio.run(main)
"""


def sandbox_problem() -> str | None:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return "needs Linux and util-linux's unshare"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"user + mount namespaces are not available: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module", autouse=True)
def sandbox() -> None:
    problem = sandbox_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"cannot run processes as in a pod: {problem}")
        pytest.skip(f"cannot run processes as in a pod: {problem}")


@attrs.frozen
class Pod:
    name: str
    uid: str
    files: PodFiles
    run_dir: Path  # bind-mounted over /run: holds secrets/kubernetes.io/serviceaccount/

    def environment(self, namespace: str, home: Path) -> dict[str, str]:
        """What the kubelet gives a container: no kubeconfig, the service env vars and the
        downward-API variables of the pod spec."""
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
        base = {k: v for k, v in os.environ.items() if k in keep}
        return (
            base
            | self.files.environment()
            | {
                "HOME": str(home),
                "HOSTNAME": self.name,
                "POD_NAME": self.name,
                "POD_NAMESPACE": namespace,
                "POD_UID": self.uid,
            }
        )

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` in a mount namespace where the pod's ServiceAccount directory is at
        /var/run/secrets/kubernetes.io/serviceaccount."""
        script = 'mount --bind "$0" /run && exec "$@"'
        return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script,
                str(self.run_dir), *argv]  # fmt: skip


@attrs.frozen
class Cluster:
    namespace: str
    suffix: str
    handle: ClusterHandle

    def pod(self, name: str, account: str, tmp: Path) -> Pod:
        created = self.handle.rest().expect(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "serviceAccountName": account,
                    "containers": [{"name": "main", "image": "konductor-koncli"}],
                },
            },
        )
        uid = created["metadata"]["uid"]
        token = self.handle.service_account_token(self.namespace, account, pod=(name, uid))
        run_dir = tmp / name / "run"
        directory = run_dir / SERVICE_ACCOUNT_DIR.removeprefix("/run/")
        files = self.handle.pod_files(directory, self.namespace, token)
        return Pod(name, uid, files, run_dir)

    def delete_pod(self, name: str) -> None:
        self.handle.rest().expect("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{name}")


def generated_rbac() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in ("operator-role.yaml", "user-roles.yaml"):
        docs += [d for d in yaml.safe_load_all((ROOT / "deploy/rbac" / name).read_text()) if d]
    return docs


@pytest.fixture
def cluster(control_plane: ClusterHandle) -> Iterator[Cluster]:
    """A namespace with the generated roles applied (cluster-scoped ones renamed), the
    ServiceAccounts ``worker`` (bound to konductor-user) and ``konductor-operator``."""
    rest = control_plane.rest()
    suffix = secrets.token_hex(3)
    namespace = control_plane.create_namespace(f"inpod-{suffix}")
    created: list[str] = []
    try:
        for doc in generated_rbac():
            doc = copy.deepcopy(doc)
            kind, metadata = doc["kind"], doc["metadata"]
            if kind in ("Role", "RoleBinding"):
                metadata["namespace"] = namespace
            else:
                metadata["name"] = f"{metadata['name']}-{suffix}"
            if kind.endswith("Binding"):
                if doc["roleRef"]["kind"] == "ClusterRole":
                    doc["roleRef"]["name"] += f"-{suffix}"
                for subject in doc["subjects"]:
                    subject["namespace"] = namespace
            plural = kind.lower() + "s"
            where = (
                f"namespaces/{namespace}/{plural}" if kind in ("Role", "RoleBinding") else plural
            )
            rest.expect("POST", f"{RBAC}/{where}", doc)
            if not kind.startswith("Role"):
                created.append(f"{RBAC}/{plural}/{metadata['name']}")
        rest.expect(
            "POST",
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "worker-konductor-user"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"konductor-user-{suffix}",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "worker", "namespace": namespace}],
            },
        )
        control_plane.create_service_account(namespace, "worker")
        control_plane.create_service_account(namespace, "konductor-operator")
        # The bindings are in force a moment after their writes: wait until the authorizer
        # applies them, or a pod's first request could be refused.
        for account, verb in (("worker", "create"), ("konductor-operator", "watch")):
            control_plane.wait_allowed(
                f"system:serviceaccount:{namespace}:{account}",
                verb,
                "semaphores",
                group="sync.konductor.io",
                namespace=namespace,
                groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            )
        yield Cluster(namespace, suffix, control_plane)
    finally:
        for path in reversed(created):
            rest.request("DELETE", path)
        rest.request("DELETE", f"/api/v1/namespaces/{namespace}")


def start_in_pod(
    pod: Pod, argv: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(pod.command(argv), stdout=out, stderr=subprocess.STDOUT, env=env)


async def test_permits_of_deleted_pods_are_released_by_the_operator(
    cluster: Cluster, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = cluster.namespace
    worker = cluster.pod("worker-0", "worker", tmp_path)
    init = cluster.pod("worker-1", "worker", tmp_path)
    operator_pod = cluster.pod("konductor-operator-0", "konductor-operator", tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # The worker holds a permit through the public SDK, in-cluster.
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        worker_log = tmp_path / "worker.log"
        env = worker.environment(ns, home)
        processes.append(start_in_pod(worker, [sys.executable, str(script)], env, worker_log))
        async with Client(kubeconfig=kubeconfig, namespace=ns) as admin:
            sem = await watch_until(
                admin,
                SEMAPHORE,
                ns,
                "gpu",
                lambda o: o is not None and bool(o.status.get("holders")),
            )
            assert sem is not None
            ((worker_slot, entry),) = sem.status["holders"].items()
            assert entry["holder"] == f"worker-0:{worker.uid}"
            # The grant lives as long as its session, and the session as long as its pod.
            worker_session = await admin.store.get(SESSION, ns, entry["session"])
            assert worker_session.spec["pod"] == {
                "name": "worker-0",
                "namespace": ns,
                "uid": worker.uid,
            }
            # Its credentials are the ServiceAccount's: konductor-user, nothing more.
            assert "HELD" in await read_until(worker_log, "HELD", processes[0])

            # The initContainer pattern, with koncli in-cluster.
            xdg = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
            koncli = [str(BIN / "koncli"), "semaphore"]
            done = await anyio.run_process(
                init.command([*koncli, "acquire", "gpu", "--for-pod", "-o", "json"]),
                env=init.environment(ns, home) | xdg,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            init_slot = json.loads(done.stdout.decode())["key"].split("#")[0]
            sem = await admin.store.get(SEMAPHORE, ns, "gpu")
            assert set(sem.status["holders"]) == {worker_slot, init_slot}
            init_session = await admin.store.get(
                SESSION, ns, sem.status["holders"][init_slot]["session"]
            )
            assert init_session.spec["pod"]["uid"] == init.uid
            assert init_session.spec["ttlSeconds"] == 0  # --for-pod: no TTL, only the pod
            # A worker's token may not do what konductor-user does not grant.
            forbidden = await anyio.run_process(
                init.command([*koncli, "list", "-n", "kube-system"]),
                env=init.environment(ns, home) | xdg,
                check=False,
            )
            assert forbidden.returncode != 0
            assert "forbidden" in (forbidden.stdout + forbidden.stderr).decode().lower()

            # The operator, in-cluster as its own ServiceAccount with the generated roles.
            port = free_port()
            operator_log = tmp_path / "operator.log"
            argv = [
                *(sys.executable, "-m", "konductor_operator", "--namespace", ns),
                *("--metrics-port", str(port), *FAST_ELECTION, "--log-level", "DEBUG"),
            ]
            proc = start_in_pod(
                operator_pod, argv, operator_pod.environment(ns, home), operator_log
            )
            processes.append(proc)
            op = OperatorProcess(proc, port, operator_log)
            await anyio.to_thread.run_sync(lambda: wait_ready(op))
            # Both pods exist: nothing is reaped.
            assert set((await admin.store.get(SEMAPHORE, ns, "gpu")).status["holders"]) == {
                worker_slot,
                init_slot,
            }

            cluster.delete_pod("worker-0")
            cluster.delete_pod("worker-1")
            with anyio.fail_after(60):
                released = await watch_until(
                    admin,
                    SEMAPHORE,
                    ns,
                    "gpu",
                    lambda o: o is not None and not o.status.get("holders"),
                )
            assert released is not None
            assert released.status.get("inUse", 0) == 0
            # Removed by the operator: it ended both sessions for their pods' deletion
            # (the worker's 600 s TTL was far from over) and deleted them, as its own
            # ServiceAccount, then reaped the grants naming them (its counter moves just
            # after the write that the watch above may already have delivered).
            for session in (worker_session, init_session):
                with pytest.raises(NotFoundError):
                    await admin.store.get(SESSION, ns, session.name)
                line = f"session {ns}/{session.name} ended: pod over (PodDeleted)"
                await await_until(partial(logged, op, line), within=30, what=repr(line), op=op)
            await await_until(
                lambda: (
                    op.metric(
                        "konductor_operator_reaped_total", kind="Semaphore", reason="SessionEnded"
                    )
                    == 2.0
                ),
                within=30,
                what="two SessionEnded reaps counted",
                op=op,
            )
            # The election Lease was created in the operator's own namespace (its Role).
            lease = await admin.store.get(LEASE, ns, "konductor-operator")
            assert lease.name == "konductor-operator"
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_ready(op: OperatorProcess) -> None:
    from _operator_support import ready_leader, wait_until

    wait_until(lambda: ready_leader(op), timeout=60, what="operator ready and leading", op=op)


async def read_until(log: Path, text: str, proc: subprocess.Popen[bytes]) -> str:
    with anyio.fail_after(60):
        while text not in (content := await anyio.Path(log).read_text()):
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}:\n{content}")
            await anyio.sleep(0.05)
    return content

"""Fault injection on the local control plane really happens, and is always undone.

Each operation is checked from outside: the kernel's view of the processes (``/proc``),
requests that do or do not complete, connections refused, objects that survive. The tests
that freeze or restart use the ``isolated_control_plane`` fixture, never the shared
control plane that other tests (and other xdist workers) are using at the same moment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from kubernetes_asyncio import client

from konductor_sdk.testing import ControlPlaneError, Frozen, LocalControlPlane
from konductor_sdk.testing._process import ManagedProcess
from konductor_sdk.testing.pytest_plugin import EXISTING_CLUSTER_ENV

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.skipif(
        bool(os.environ.get(EXISTING_CLUSTER_ENV)), reason="needs local control planes"
    ),
]

# How long a request must stay unanswered to count as held by a freeze. Unfrozen, each of
# these requests is answered in milliseconds, so a freeze that did not happen fails the test.
HELD = 1.0


def _states(pid: int) -> set[str]:
    """The scheduler states of every thread of ``pid`` (empty once it is gone or a zombie)."""
    states = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return set()
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue
        states.add(stat.rsplit(")", 1)[1].split()[0])
    return states - {"Z", "X"}


def _stopped(pid: int) -> bool:
    return _states(pid) == {"T"}


def _alive(pid: int) -> bool:
    return bool(_states(pid))


def _wait_gone(pids: list[int]) -> None:
    # The kernel kills at once; reaping (by us or by init) may lag a moment.
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)]


# -- ManagedProcess: freezing a plain child --------------------------------------------------


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[ManagedProcess]:
    process = ManagedProcess("sleeper", ["sleep", "60"], tmp_path / "sleeper.log")
    yield process
    process.kill()


def test_freeze_stops_every_thread_and_thaw_resumes(sleeper: ManagedProcess) -> None:
    sleeper.freeze()
    assert _stopped(sleeper.pid)
    assert sleeper.frozen
    assert "frozen" in repr(sleeper)
    sleeper.freeze()  # idempotent
    sleeper.thaw()
    assert _alive(sleeper.pid)
    assert "T" not in _states(sleeper.pid)
    assert not sleeper.frozen
    sleeper.thaw()  # idempotent


def test_stopping_a_frozen_process_lets_it_handle_sigterm(sleeper: ManagedProcess) -> None:
    sleeper.freeze()
    sleeper.stop(grace=30)
    # Ended by the SIGTERM (resumed by SIGCONT), not by the SIGKILL after the grace period.
    assert sleeper.returncode == -signal.SIGTERM
    assert not sleeper.frozen


def test_kill_ends_a_frozen_process(sleeper: ManagedProcess) -> None:
    sleeper.freeze()
    sleeper.kill()
    assert sleeper.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        sleeper.freeze()
    sleeper.thaw()  # a no-op on an exited process


# -- freezing the control plane --------------------------------------------------------------


def test_a_write_waits_while_etcd_is_frozen_and_completes_after_thaw(
    isolated_control_plane: LocalControlPlane,
) -> None:
    cp = isolated_control_plane
    rest = cp.handle.rest()
    name = f"frozen-{os.urandom(3).hex()}"
    answered: list[tuple[int, float]] = []

    def create() -> None:
        body = {"metadata": {"name": name}}
        status, _ = rest.request("POST", "/api/v1/namespaces", body, timeout=60)
        answered.append((status, time.monotonic()))

    writer = threading.Thread(target=create)
    with cp.frozen("etcd"):
        assert cp.states == {"etcd": "frozen", "kube-apiserver": "running"}
        assert _stopped(cp.pids["etcd"])
        assert "T" not in _states(cp.pids["kube-apiserver"])
        writer.start()
        writer.join(HELD)
        assert writer.is_alive(), "the write completed while etcd was frozen"
        thawed = time.monotonic()
    assert cp.states == {"etcd": "running", "kube-apiserver": "running"}
    writer.join(60)
    assert len(answered) == 1
    status, at = answered[0]
    assert status == 201
    assert at > thawed
    assert rest.request("GET", f"/api/v1/namespaces/{name}")[0] == 200


@pytest.mark.anyio
async def test_a_request_waits_while_the_apiserver_is_frozen(
    isolated_control_plane: LocalControlPlane,
) -> None:
    cp = isolated_control_plane
    answered: list[float] = []
    done = anyio.Event()
    async with cp.api_client() as api:
        core = client.CoreV1Api(api)
        await core.list_namespace()  # a pooled connection, opened before the freeze

        async def list_namespaces() -> None:
            await core.list_namespace()
            answered.append(time.monotonic())
            done.set()

        async with anyio.create_task_group() as tg:
            async with cp.frozen("kube-apiserver"):
                assert cp.states["kube-apiserver"] == "frozen"
                assert _stopped(cp.pids["kube-apiserver"])
                tg.start_soon(list_namespaces)
                with anyio.move_on_after(HELD):
                    await done.wait()
                assert not answered, "answered by a frozen apiserver"
                thawed = time.monotonic()
            with anyio.fail_after(60):
                await done.wait()
    assert answered[0] > thawed
    assert cp.states["kube-apiserver"] == "running"


def test_frozen_block_thaws_when_the_body_raises(
    isolated_control_plane: LocalControlPlane,
) -> None:
    cp = isolated_control_plane
    frozen = cp.frozen("etcd", "kube-apiserver")
    assert isinstance(frozen, Frozen)
    seen: list[dict[str, str]] = []

    def body() -> None:
        with frozen:
            seen.append(cp.states)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert seen == [{"etcd": "frozen", "kube-apiserver": "frozen"}]
    assert set(cp.states.values()) == {"running"}
    assert not any(_stopped(pid) for pid in cp.pids.values())
    assert cp.handle.rest().request("GET", "/readyz")[0] == 200


# -- stopping, killing and restarting --------------------------------------------------------


def _config_map(name: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "data": {"written": "before"}}


@pytest.mark.anyio
async def test_apiserver_restart_keeps_port_certificates_and_data(
    isolated_control_plane: LocalControlPlane,
) -> None:
    cp = isolated_control_plane
    rest = cp.handle.rest()
    server, kubeconfig = cp.server, cp.kubeconfig_path.read_bytes()
    name = f"survivor-{os.urandom(3).hex()}"
    rest.expect("POST", "/api/v1/namespaces/default/configmaps", _config_map(name))
    semaphores = "/apis/sync.konductor.io/v1alpha1/namespaces/default/semaphores"
    semaphore = {
        "apiVersion": "sync.konductor.io/v1alpha1",
        "kind": "Semaphore",
        "metadata": {"name": name},
        "spec": {"permits": 2},
    }
    rest.expect("POST", semaphores, semaphore)
    before = cp.pids["kube-apiserver"]

    async with cp.api_client() as api:  # its pooled connection dies with the old process
        core = client.CoreV1Api(api)
        await core.read_namespaced_config_map(name, "default")
        await cp.arestart("kube-apiserver")
        assert cp.pids["kube-apiserver"] != before
        assert not _alive(before)
        assert (cp.server, cp.kubeconfig_path.read_bytes()) == (server, kubeconfig)
        read = await core.read_namespaced_config_map(name, "default")
        assert read.data == {"written": "before"}
    # CRDs are served at once: restart() waited for them.
    assert rest.expect("GET", f"{semaphores}/{name}")["spec"]["permits"] == 2
    assert cp.states == {"etcd": "running", "kube-apiserver": "running"}


def test_killed_apiserver_refuses_connections_until_restarted(
    isolated_control_plane: LocalControlPlane,
) -> None:
    cp = isolated_control_plane
    rest = cp.handle.rest()
    name = f"killed-{os.urandom(3).hex()}"
    rest.expect("POST", "/api/v1/namespaces/default/configmaps", _config_map(name))
    pid = cp.pids["kube-apiserver"]
    cp.kill("kube-apiserver")
    assert not _alive(pid)
    assert cp.states == {"etcd": "running", "kube-apiserver": "stopped"}
    cp.check_alive()  # stopped on purpose: not an error
    with pytest.raises(ConnectionRefusedError):
        rest.request("GET", "/readyz")
    with pytest.raises(RuntimeError, match="stopped"):
        cp.freeze("kube-apiserver")
    cp.restart("kube-apiserver")
    assert rest.expect("GET", f"/api/v1/namespaces/default/configmaps/{name}")["data"] == {
        "written": "before"
    }


@pytest.mark.anyio
async def test_etcd_killed_and_restarted_keeps_its_data(
    isolated_control_plane: LocalControlPlane,
) -> None:
    cp = isolated_control_plane
    rest = cp.handle.rest()
    name = f"etcd-kill-{os.urandom(3).hex()}"
    rest.expect("POST", "/api/v1/namespaces/default/configmaps", _config_map(name))
    pid = cp.pids["etcd"]
    await cp.akill("etcd")
    assert not _alive(pid)
    assert cp.states["etcd"] == "stopped"
    with pytest.raises(RuntimeError, match="etcd is stopped"):
        await cp.arestart("kube-apiserver")
    await cp.arestart("etcd")  # waits for the apiserver to be ready again, too
    assert cp.states == {"etcd": "running", "kube-apiserver": "running"}
    path = f"/api/v1/namespaces/default/configmaps/{name}"
    assert rest.expect("GET", path)["data"] == {"written": "before"}


def test_terminate_stops_gracefully_and_restart_brings_it_back(
    isolated_control_plane: LocalControlPlane,
) -> None:
    cp = isolated_control_plane
    pid = cp.pids["kube-apiserver"]
    cp.freeze("kube-apiserver")
    cp.terminate("kube-apiserver")  # thawed so that it handles the SIGTERM
    assert not _alive(pid)
    assert cp.states["kube-apiserver"] == "stopped"
    cp.restart("kube-apiserver")
    assert cp.handle.rest().request("GET", "/readyz")[0] == 200


def test_bad_names_and_states_are_rejected(isolated_control_plane: LocalControlPlane) -> None:
    cp = isolated_control_plane
    with pytest.raises(ValueError, match="process name must be one of"):
        cp.freeze("apiserver")
    with pytest.raises(ValueError, match="at least one process"):
        cp.freeze()
    with pytest.raises(ValueError, match="at least one process"):
        cp.frozen()
    with pytest.raises(ValueError, match="process name must be one of"):
        cp.restart("scheduler")
    with cp.frozen("etcd"), pytest.raises(RuntimeError, match="etcd is frozen"):
        cp.restart("kube-apiserver")
    stopped = LocalControlPlane(crd_dirs=())
    with pytest.raises(RuntimeError, match="not running"):
        stopped.freeze("etcd")
    with pytest.raises(RuntimeError, match="not running"):
        stopped.restart("kube-apiserver")
    stopped.thaw()  # nothing to thaw: not an error


# -- nothing stays frozen ---------------------------------------------------------------------


def test_stop_thaws_frozen_processes_and_leaves_nothing_running() -> None:
    plane = LocalControlPlane(crd_dirs=()).start()
    try:
        processes = [plane._etcd, plane._apiserver]  # to read their exit statuses afterwards
        plane.freeze("etcd", "kube-apiserver")
        pids = list(plane.pids.values())
        assert all(_stopped(pid) for pid in pids)
    finally:
        plane.stop()
    assert not [pid for pid in pids if _alive(pid)]
    # Both handled their SIGTERM: they were thawed, not left stopped until a SIGKILL.
    assert [p.returncode for p in processes if p is not None] != []
    assert all(p.returncode != -signal.SIGKILL for p in processes if p is not None)
    assert plane.states == {}
    with pytest.raises(RuntimeError, match="not running"):
        plane.restart("etcd")


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_a_frozen_plane_does_not_outlive_its_process(ending: str) -> None:
    # "exit": the interpreter ends without stop(): the atexit handler must thaw and stop.
    # "sigkill": no Python code runs at all: PR_SET_PDEATHSIG's SIGKILL ends stopped
    # processes too.
    script = textwrap.dedent(
        """\
        import json, sys
        from konductor_sdk.testing import LocalControlPlane
        plane = LocalControlPlane(crd_dirs=()).start()
        plane.freeze("etcd", "kube-apiserver")
        print(json.dumps({"pids": plane.pids, "dir": str(plane.directory)}), flush=True)
        sys.stdin.readline()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as parent:
        assert parent.stdout is not None
        assert parent.stdin is not None
        started = json.loads(parent.stdout.readline())
        pids = list(started["pids"].values())
        assert all(_stopped(pid) for pid in pids)
        if ending == "exit":
            parent.stdin.write("\n")
            parent.stdin.flush()
            assert parent.wait(60) == 0
        else:
            parent.kill()
            parent.wait(60)
    _wait_gone(pids)
    if ending == "exit":
        assert not Path(started["dir"]).exists()


# -- the fixture and the documentation ---------------------------------------------------------


def test_isolated_control_plane_is_private_and_repaired_between_tests(tmp_path: Path) -> None:
    # A test session of its own, so that test order is certain (no xdist).
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """\
            SEEN = {}

            def test_breaks_it(isolated_control_plane, control_plane):
                cp = isolated_control_plane
                assert cp.server != control_plane.server
                SEEN["server"] = cp.server
                cp.freeze("etcd")
                cp.kill("kube-apiserver")

            def test_gets_it_repaired(isolated_control_plane):
                cp = isolated_control_plane
                assert cp.server == SEEN["server"]
                assert cp.states == {"etcd": "running", "kube-apiserver": "running"}
                paths = "/apis/sync.konductor.io/v1alpha1/semaphores"
                assert cp.handle.rest().request("GET", paths)[0] == 200
            """
        )
    )
    outcome = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "2 passed" in outcome.stdout


def test_a_failed_restart_reports_the_log_tail(isolated_control_plane: LocalControlPlane) -> None:
    # Somebody else takes the apiserver's port while it is down: restart fails loudly.
    cp = isolated_control_plane
    cp.terminate("kube-apiserver")
    squatter = socket.socket()
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", cp.ports["apiserver"]))
        squatter.listen()
        with pytest.raises(ControlPlaneError, match="kube-apiserver exited"):
            cp.restart("kube-apiserver")
        assert cp.states["kube-apiserver"] == "exited"
    finally:
        squatter.close()
    # The fixture restarts it for the next test; here, by hand, to check it works.
    cp.restart("kube-apiserver")
    assert cp.states["kube-apiserver"] == "running"

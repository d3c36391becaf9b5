"""pytest plugin: one real control plane per test session, shared by all xdist workers.

Installing konductor registers this plugin (a ``pytest11`` entry point named after this
module), so there is nothing to enable; ``-p no:konductor_sdk.testing.pytest_plugin`` turns it
off. Listing it in ``pytest_plugins`` still works (it is then not registered twice).

It starts nothing unless a test uses its fixtures. Who starts the control plane:

* with pytest-xdist, a worker whose collected tests use the ``control_plane`` fixture
  (directly or through the others) says so through a temporary directory before it reports
  its collection; the controller then starts the control plane, before any test is
  scheduled, and publishes its address and CA there for every worker. The controller only
  offers this when the command line can reach integration or e2e tests (a path under an
  ``integration``/``e2e`` directory, and a ``-m`` expression that does not exclude both
  markers);
* otherwise (no xdist, or no sharing offered), the process that collected tests needing the
  ``control_plane`` fixture starts its own after collection.

So ``pytest tests/unit`` never starts one, and neither does a project that merely has
konductor installed. ``KONDUCTOR_TEST_KUBECONFIG=/path`` replaces the local control plane by
an existing cluster (the CRDs are still installed into it).

Tests that inject faults into the control plane (freeze, kill or restart etcd or the
apiserver) must not do it to the shared one: every other test running at that moment, in
this process or another xdist worker, would fail. ``isolated_control_plane`` gives them a
private :class:`LocalControlPlane` instead, one per test module and process, thawed and
restarted as needed after each test.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, final

import pytest

from ._binaries import BinariesError
from ._cluster import ClusterHandle
from ._controlplane import ControlPlaneError, LocalControlPlane
from ._rest import RestError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = [
    "EXISTING_CLUSTER_ENV",
    "anyio_backend",
    "api_client",
    "control_plane",
    "isolated_control_plane",
    "kubeconfig",
    "namespace",
]

EXISTING_CLUSTER_ENV: Final = "KONDUCTOR_TEST_KUBECONFIG"
_WORKERINPUT_KEY: Final = "konductor_cluster"
_MARKERS: Final = ("integration", "e2e")
_SKIP_DIRS: Final = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".tox"})


@final
class _Rendezvous:
    """A directory through which xdist workers and their controller share one cluster.

    A worker whose tests need the cluster leaves a ``need-<worker>`` file *before* it reports
    its collection; the controller, on that report and before it schedules any test, starts
    the cluster and publishes its handle (or why it could not) for every worker to read.
    """

    _HANDLE = "cluster.json"
    _FAILURE = "failure.txt"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def create(cls) -> _Rendezvous:
        return cls(Path(tempfile.mkdtemp(prefix="konductor-pytest-")))

    def request(self, worker: str) -> None:
        (self.directory / f"need-{worker}").touch()

    def requested(self) -> bool:
        return any(self.directory.glob("need-*"))

    def publish(self, handle: ClusterHandle) -> None:
        self._write(self._HANDLE, json.dumps(handle.to_dict()))

    def publish_failure(self, message: str) -> None:
        self._write(self._FAILURE, message)

    def read(self) -> ClusterHandle | None:
        """The controller's cluster; None if it started none (the worker starts its own)."""
        failure = self.directory / self._FAILURE
        if failure.exists():
            raise pytest.UsageError(failure.read_text())
        handle = self.directory / self._HANDLE
        if not handle.exists():
            return None
        return ClusterHandle.from_dict(json.loads(handle.read_text()))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _write(self, name: str, text: str) -> None:
        partial = self.directory / f".{name}.partial"
        partial.write_text(text)
        partial.replace(self.directory / name)  # readers never see half a file


@final
class _SessionCluster:
    """The session's cluster: started on first need, stopped at unconfigure if we own it.

    Args:
        rendezvous: Where an xdist controller and its workers meet, if sharing is offered.
        controller: Whether this process is the xdist controller (it owns the rendezvous).
    """

    def __init__(self, rendezvous: _Rendezvous | None = None, *, controller: bool = False) -> None:
        self._handle: ClusterHandle | None = None
        self._plane: LocalControlPlane | None = None
        self._failure: pytest.UsageError | None = None
        self._restore_sigterm: Callable[[], None] | None = None
        self._rendezvous = rendezvous
        self._controller = controller

    @property
    def rendezvous(self) -> _Rendezvous | None:
        return self._rendezvous

    def get(self) -> ClusterHandle:
        if self._failure is not None:  # fail every dependent test fast, not one start each
            raise self._failure
        if self._handle is None and self._rendezvous is not None and not self._controller:
            try:
                self._handle = self._rendezvous.read()
            except pytest.UsageError as error:
                self._failure = error
                raise
        if self._handle is None:
            try:
                self._handle = self._start()
            except (BinariesError, ControlPlaneError, RestError, OSError, ValueError) as error:
                # A one-line "ERROR: ..." from pytest instead of an INTERNALERROR traceback.
                self._failure = pytest.UsageError(f"konductor: no control plane: {error}")
                raise self._failure from error
        return self._handle

    def serve_workers(self) -> None:
        """On the controller: start and publish the cluster once a worker has asked for it."""
        rendezvous = self._rendezvous
        if not self._controller or rendezvous is None or not rendezvous.requested():
            return
        if self._handle is not None or self._failure is not None:
            return  # already published
        try:
            handle = self.get()
        except pytest.UsageError as error:
            # Raising here would be an xdist INTERNALERROR; every test that needs the
            # cluster fails with this message instead.
            rendezvous.publish_failure(str(error))
        else:
            rendezvous.publish(handle)

    def _start(self) -> ClusterHandle:
        existing = os.environ.get(EXISTING_CLUSTER_ENV)
        if existing:
            handle = ClusterHandle.from_kubeconfig(existing)
            handle.install_crds()
            return handle
        self._restore_sigterm = _terminate_gracefully_on_sigterm()
        self._plane = LocalControlPlane().start()
        return self._plane.handle

    def close(self) -> None:
        if self._plane is not None:
            self._plane.stop()
            self._plane = None
        if self._restore_sigterm is not None:
            self._restore_sigterm()
            self._restore_sigterm = None
        if self._controller and self._rendezvous is not None:
            self._rendezvous.remove()


_CLUSTER: Final = pytest.StashKey[_SessionCluster]()


def _terminate_gracefully_on_sigterm() -> Callable[[], None] | None:
    # With the default SIGTERM action (CI cancelling a job) the interpreter dies on the spot:
    # the children still die (PDEATHSIG) but the temporary directory is left behind. Raising
    # KeyboardInterrupt instead lets pytest unwind and unconfigure as on Ctrl-C.
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None  # someone else owns SIGTERM: leave it to them

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, interrupt)
    return restore


def _marker_expression_allows(config: pytest.Config) -> bool:
    expression = config.option.markexpr
    if not expression:
        return True

    def matcher_for(marker: str) -> Any:
        return lambda name, /, **kwargs: name == marker

    try:
        # Private but stable since pytest 6; any surprise degrades to "start it".
        from _pytest.mark.expression import Expression

        compiled = Expression.compile(expression)
        return any(compiled.evaluate(matcher_for(marker)) for marker in _MARKERS)
    except Exception:
        return True


def _may_hold_cluster_tests(path: Path, root: Path) -> bool:
    try:  # only directories inside the project count, not a checkout under ~/integration/
        parts = path.resolve().relative_to(root.resolve()).parts
    except ValueError:
        parts = path.parts
    if set(parts) & set(_MARKERS):
        return True
    if not path.is_dir():
        return False
    for _, dirnames, _ in os.walk(path):
        if set(dirnames) & set(_MARKERS):
            return True
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
    return False


def _controller_wants_cluster(config: pytest.Config) -> bool:
    option = config.option
    if getattr(option, "dist", "no") == "no" or option.collectonly or option.help:
        return False
    if not _marker_expression_allows(config):
        return False
    base = config.invocation_params.dir
    return any(
        _may_hold_cluster_tests(base / arg.split("::", 1)[0], config.rootpath)
        for arg in config.args
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; on the xdist controller, offer workers a shared cluster.

    Nothing is started here: the cluster starts only once a collected test needs it.
    """
    config.addinivalue_line("markers", "integration: needs the real local control plane")
    config.addinivalue_line("markers", "e2e: runs separate processes against the control plane")
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        shared = workerinput.get(_WORKERINPUT_KEY)
        rendezvous = _Rendezvous(Path(json.loads(shared)["rendezvous"])) if shared else None
        cluster = _SessionCluster(rendezvous)
    elif _controller_wants_cluster(config):
        cluster = _SessionCluster(_Rendezvous.create(), controller=True)
    else:
        cluster = _SessionCluster()
    config.stash[_CLUSTER] = cluster


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell an xdist worker where to ask for the shared cluster (an xdist hook)."""
    rendezvous = node.config.stash[_CLUSTER].rendezvous
    if rendezvous is not None:
        node.workerinput[_WORKERINPUT_KEY] = json.dumps({"rendezvous": str(rendezvous.directory)})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """On the controller, before any test is scheduled: start the cluster a worker needs."""
    node.config.stash[_CLUSTER].serve_workers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under ``integration/`` and ``e2e/`` directories with those markers."""
    for item in items:
        try:
            parts = item.path.relative_to(config.rootpath).parts
        except ValueError:
            parts = item.path.parts
        for marker in _MARKERS:
            if marker in parts:
                item.add_marker(marker)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reports its collection
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the cluster now (outside any test's timeout) if a selected test needs it.

    An xdist worker offered a shared cluster asks the controller for it instead.
    """
    config = session.config
    if config.option.collectonly:
        return
    if not any("control_plane" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    cluster = config.stash[_CLUSTER]
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if cluster.rendezvous is not None and workerinput is not None:
        cluster.rendezvous.request(str(workerinput.get("workerid", os.getpid())))
    else:
        cluster.get()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the control plane this process started (workers never own the shared one)."""
    cluster = config.stash.get(_CLUSTER, None)
    if cluster is not None:
        cluster.close()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only (what kubernetes_asyncio needs)."""
    return "asyncio"


@pytest.fixture(scope="session")
def control_plane(pytestconfig: pytest.Config) -> ClusterHandle:
    """The session's cluster: ``kubeconfig_path``, ``server``, ``mint_kubeconfig()``..."""
    return pytestconfig.stash[_CLUSTER].get()


@pytest.fixture(scope="module")
def _isolated_plane() -> Iterator[LocalControlPlane]:
    if os.environ.get(EXISTING_CLUSTER_ENV):
        pytest.skip(
            f"fault injection needs a local control plane, and {EXISTING_CLUSTER_ENV} is set"
        )
    # The same CRDs as the shared control plane: the defaults, or $KONDUCTOR_CRDS_DIR.
    plane = LocalControlPlane()
    try:
        plane.start()
    except (BinariesError, ControlPlaneError, RestError, OSError, ValueError) as error:
        pytest.fail(f"konductor: no isolated control plane: {error}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def isolated_control_plane(_isolated_plane: LocalControlPlane) -> Iterator[LocalControlPlane]:
    """A private :class:`LocalControlPlane`, for tests that freeze, kill or restart it.

    One per test module (and per xdist worker), started on first use with the same CRDs as
    the shared one, stopped after the module. After each test every process is thawed, and
    one that a test stopped (or that died) is restarted, so the next test starts from a
    running control plane; objects a test created are still there.
    """
    yield _isolated_plane
    _isolated_plane.thaw()
    for name, state in _isolated_plane.states.items():  # etcd first
        if state != "running":
            _isolated_plane.restart(name)


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ClusterHandle) -> Path:
    """Path of the admin kubeconfig (context ``konductor-local``)."""
    return control_plane.kubeconfig_path


@pytest.fixture
async def api_client(control_plane: ClusterHandle, anyio_backend: str) -> AsyncIterator[ApiClient]:
    """An admin ``kubernetes_asyncio`` ``ApiClient``, closed after the test."""
    async with control_plane.api_client() as client:
        yield client


def _namespace_name(test_name: str) -> str:
    # Readable in `kubectl get ns` yet unique across workers and reruns; <= 63 chars.
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:48] or "test"
    return f"{slug}-{secrets.token_hex(3)}"


@pytest.fixture
async def namespace(api_client: ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace for this test, deleted afterwards.

    Nothing reconciles deletions on a bare control plane, so the namespace only goes to
    ``Terminating``; its name is never reused, which is what isolation needs.
    """
    from kubernetes_asyncio.client import CoreV1Api, V1Namespace, V1ObjectMeta
    from kubernetes_asyncio.client.exceptions import ApiException

    core = CoreV1Api(api_client)
    name = _namespace_name(request.node.name)
    meta = V1ObjectMeta(name=name, labels={"konductor.io/test": "true"})
    await core.create_namespace(V1Namespace(metadata=meta))
    try:
        yield name
    finally:
        try:
            await core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise

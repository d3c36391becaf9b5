"""pytest plugin: one real control plane per test session, shared by all xdist workers.

Enable it from a ``conftest.py``::

    pytest_plugins = ["konductor_sdk.testing.pytest_plugin"]

Who starts the control plane:

* with pytest-xdist, the controller process starts it in ``pytest_configure`` when the
  command line can reach integration or e2e tests (a path under an ``integration``/``e2e``
  directory, and a ``-m`` expression that does not exclude both markers), and hands its
  address and CA to every worker through ``workerinput``;
* otherwise (no xdist, or the controller guessed "no"), the process that collected tests
  needing the ``control_plane`` fixture starts its own after collection.

So ``pytest tests/unit`` never starts one. ``KONDUCTOR_TEST_KUBECONFIG=/path`` replaces the
local control plane by an existing cluster (the CRDs are still installed into it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import threading
from collections.abc import AsyncIterator, Callable
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
    "kubeconfig",
    "namespace",
]

EXISTING_CLUSTER_ENV: Final = "KONDUCTOR_TEST_KUBECONFIG"
_WORKERINPUT_KEY: Final = "konductor_cluster"
_MARKERS: Final = ("integration", "e2e")
_SKIP_DIRS: Final = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".tox"})


@final
class _SessionCluster:
    """The session's cluster: started on first need, stopped at unconfigure if we own it."""

    def __init__(self, handle: ClusterHandle | None = None) -> None:
        self._handle = handle
        self._plane: LocalControlPlane | None = None
        self._failure: pytest.UsageError | None = None
        self._restore_sigterm: Callable[[], None] | None = None

    @property
    def started(self) -> bool:
        return self._handle is not None

    def get(self) -> ClusterHandle:
        if self._failure is not None:  # fail every dependent test fast, not one start each
            raise self._failure
        if self._handle is None:
            try:
                self._handle = self._start()
            except (BinariesError, ControlPlaneError, RestError, OSError, ValueError) as error:
                # A one-line "ERROR: ..." from pytest instead of an INTERNALERROR traceback.
                self._failure = pytest.UsageError(f"konductor: no control plane: {error}")
                raise self._failure from error
        return self._handle

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
    """Register the markers; on the xdist controller, start the shared control plane."""
    config.addinivalue_line("markers", "integration: needs the real local control plane")
    config.addinivalue_line("markers", "e2e: runs separate processes against the control plane")
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    shared = (workerinput or {}).get(_WORKERINPUT_KEY)
    handle = ClusterHandle.from_dict(json.loads(shared)) if shared else None
    cluster = _SessionCluster(handle)
    config.stash[_CLUSTER] = cluster
    if workerinput is None and _controller_wants_cluster(config):
        cluster.get()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand the controller's cluster to an xdist worker (an xdist hook)."""
    cluster = node.config.stash[_CLUSTER]
    if cluster.started:
        node.workerinput[_WORKERINPUT_KEY] = json.dumps(cluster.get().to_dict())


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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the cluster now (outside any test's timeout) if a selected test needs it."""
    if session.config.option.collectonly:
        return
    if any("control_plane" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[_CLUSTER].get()


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

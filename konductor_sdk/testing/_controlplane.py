"""``LocalControlPlane``: a real etcd + kube-apiserver on loopback ports, for tests.

No kubelet, scheduler or controller-manager runs: objects are stored, validated, admitted
and authorized exactly as in a cluster, but never reconciled (a deleted namespace stays
``Terminating``, a Deployment never gets pods). Launch details live in ``_launch``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, TypeVar, final

import anyio
import anyio.to_thread

from ._binaries import Binaries, ensure_binaries
from ._cluster import ClusterHandle
from ._crds import default_crd_dirs, install_crds, load_crds
from ._launch import (
    ControlPlaneError,
    Layout,
    PortTaken,
    await_ready,
    check_alive,
    sweep_stale_dirs,
    wait_ready,
)
from ._process import ManagedProcess

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = ["ControlPlaneError", "LocalControlPlane"]

_T = TypeVar("_T")
# A port picked by free_port() can be taken by someone else before our child binds it; such a
# start is retried with new ports this many times.
_START_ATTEMPTS: Final = 3


# Strong references: a control plane dropped without stop() must still be cleaned up at exit.
_running: Final[set[LocalControlPlane]] = set()
_running_lock: Final = threading.Lock()


@final
class LocalControlPlane:
    """An etcd and a kube-apiserver started for tests, with the Konductor CRDs installed.

    Usable from synchronous and asynchronous code alike::

        with LocalControlPlane() as cp:  # or: async with LocalControlPlane() as cp:
            subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig_path, "get", "ns"])

    Everything lives in a private temporary directory (certificates, etcd data, logs,
    kubeconfigs) that is removed on stop. Processes are stopped on exit of the ``with``
    block, at interpreter exit, and by the kernel if this process dies (Linux).
    """

    def __init__(
        self,
        *,
        crd_dirs: Sequence[str | os.PathLike[str]] | None = None,
        binaries: Binaries | None = None,
        start_timeout: float = 60.0,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        """Configure; nothing starts until :meth:`start` or the context manager.

        Args:
            crd_dirs: Directories of CRD YAML to install after startup. Defaults to
                ``$KONDUCTOR_CRDS_DIR`` or the CRDs shipped with ``konductor_sdk``; pass
                ``()`` to install none.
            binaries: The executables to run; :func:`ensure_binaries` by default.
            start_timeout: Seconds allowed for etcd and the apiserver to become ready.
            apiserver_args: Extra ``--flag=value`` arguments appended to the apiserver's
                command line (a later flag overrides an earlier one).

        Raises:
            ValueError: ``start_timeout`` is not positive.
        """
        if start_timeout <= 0:
            raise ValueError(f"start_timeout must be > 0, got {start_timeout}")
        self._crd_dirs = list(crd_dirs) if crd_dirs is not None else None
        self._binaries = binaries
        self._start_timeout = start_timeout
        self._apiserver_args = list(apiserver_args)
        self._lock = threading.Lock()
        self._layout: Layout | None = None
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._handle: ClusterHandle | None = None  # set once fully started
        self._pending: ClusterHandle | None = None  # set once certificates exist
        self.startup_seconds: float | None = None
        """Seconds the last successful start took, from creating the directory to CRDs
        served (finding or building the binaries excluded)."""

    def __repr__(self) -> str:
        if self._handle is None:
            return "<LocalControlPlane stopped>"
        return f"<LocalControlPlane {self._handle.server} dir={self.directory}>"

    # -- what tests use ---------------------------------------------------------------------

    @property
    def handle(self) -> ClusterHandle:
        """The picklable access details (admin kubeconfig, server, CA) of the running cluster.

        Raises:
            RuntimeError: The control plane is not running.
        """
        if self._handle is None:
            raise RuntimeError("the control plane is not running; use start() or `with`")
        return self._handle

    @property
    def server(self) -> str:
        """The apiserver URL, ``https://127.0.0.1:<port>``."""
        return self.handle.server

    @property
    def kubeconfig_path(self) -> Path:
        """The admin (``system:masters``) kubeconfig, context ``konductor-local``."""
        return self.handle.kubeconfig_path

    @property
    def directory(self) -> Path:
        """The temporary directory holding certificates, etcd data and logs."""
        if self._layout is None:
            raise RuntimeError("the control plane is not running")
        return self._layout.directory

    @property
    def pids(self) -> dict[str, int]:
        """Process ids by name (``etcd``, ``kube-apiserver``) of the started processes."""
        return {p.name: p.pid for p in (self._etcd, self._apiserver) if p is not None}

    @property
    def ports(self) -> dict[str, int]:
        """Loopback ports in use: ``apiserver``, ``etcd-client``, ``etcd-peer``."""
        if self._layout is None:
            return {}
        return {
            "apiserver": self._layout.apiserver_port,
            "etcd-client": self._layout.etcd_client_port,
            "etcd-peer": self._layout.etcd_peer_port,
        }

    def mint_kubeconfig(
        self, user: str, groups: Sequence[str] = (), namespace: str = "default"
    ) -> Path:
        """Write a client-certificate kubeconfig for ``user`` in ``groups``.

        See :meth:`ClusterHandle.mint_kubeconfig`.

        Args:
            user: The user name.
            groups: Its groups.
            namespace: The context namespace.

        Returns:
            The kubeconfig path.
        """
        return self.handle.mint_kubeconfig(user, groups, namespace)

    def api_client(
        self, kubeconfig: str | os.PathLike[str] | None = None
    ) -> AbstractAsyncContextManager[ApiClient]:
        """Open a ``kubernetes_asyncio`` ``ApiClient`` (admin by default); see the handle.

        Args:
            kubeconfig: Another identity's kubeconfig, e.g. from :meth:`mint_kubeconfig`.

        Returns:
            An async context manager yielding the client.
        """
        return self.handle.api_client(kubeconfig)

    def install_crds(self, *dirs: str | os.PathLike[str], timeout: float = 60.0) -> list[str]:
        """Install CRDs and wait until they are served (blocking); see the handle.

        Args:
            *dirs: Directories of CRD YAML files (the default directories if omitted).
            timeout: Seconds to wait.

        Returns:
            The CRD names.
        """
        return self.handle.install_crds(*dirs, timeout=timeout)

    def create_namespace(self, name: str) -> str:
        """Create a namespace if missing (blocking).

        Args:
            name: The namespace name.

        Returns:
            ``name``.
        """
        return self.handle.create_namespace(name)

    def check_alive(self) -> None:
        """Raise if etcd or the apiserver has exited since startup.

        Raises:
            ControlPlaneError: A process is gone; the message holds the tail of its log.
        """
        for process in (self._etcd, self._apiserver):
            if process is not None:
                check_alive(process)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start etcd and the apiserver, install CRDs; blocks until everything is ready.

        Returns:
            ``self``.

        Raises:
            ControlPlaneError: A process exited or did not become ready in time.
            BinariesError: The binaries are missing and could not be built.
            RuntimeError: The control plane is already running.
        """
        self._check_stopped()
        if self._binaries is None:  # may build for minutes: not part of startup_seconds
            self._binaries = ensure_binaries()
        for attempt in range(_START_ATTEMPTS):
            started = time.monotonic()
            try:
                layout = self._prepare()
                deadline = time.monotonic() + self._start_timeout
                etcd = self._spawn_etcd()
                wait_ready(layout.etcd_healthy, etcd, deadline)
                apiserver = self._spawn_apiserver()
                wait_ready(self._apiserver_ready, apiserver, deadline)
                self._finish()
            except PortTaken:
                self.stop()
                if attempt + 1 == _START_ATTEMPTS:
                    raise
            except BaseException:
                self.stop()
                raise
            else:
                self.startup_seconds = time.monotonic() - started
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    async def astart(self) -> Self:
        """Like :meth:`start`, without blocking the event loop.

        Every blocking step runs in a worker thread; cancelling the caller stops whatever
        was already started before the cancellation propagates.

        Returns:
            ``self``.

        Raises:
            ControlPlaneError: A process exited or did not become ready in time.
            BinariesError: The binaries are missing and could not be built.
            RuntimeError: The control plane is already running.
        """
        self._check_stopped()
        if self._binaries is None:
            self._binaries = await anyio.to_thread.run_sync(ensure_binaries)
        for attempt in range(_START_ATTEMPTS):
            started = time.monotonic()
            try:
                layout = await anyio.to_thread.run_sync(self._prepare)
                deadline = time.monotonic() + self._start_timeout
                etcd = await anyio.to_thread.run_sync(self._spawn_etcd)
                await await_ready(layout.etcd_healthy, etcd, deadline)
                apiserver = await anyio.to_thread.run_sync(self._spawn_apiserver)
                await await_ready(self._apiserver_ready, apiserver, deadline)
                await anyio.to_thread.run_sync(self._finish)
            except PortTaken:
                await self.astop()
                if attempt + 1 == _START_ATTEMPTS:
                    raise
            except BaseException:
                await self.astop()
                raise
            else:
                self.startup_seconds = time.monotonic() - started
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the apiserver, then etcd, and delete the temporary directory. Idempotent."""
        with self._lock:
            apiserver, etcd, layout = self._apiserver, self._etcd, self._layout
            self._apiserver = self._etcd = self._handle = self._pending = self._layout = None
        with _running_lock:
            _running.discard(self)
        # The apiserver first: it would otherwise spin on etcd reconnects while shutting down.
        if apiserver is not None:
            apiserver.stop(grace=10.0)
        if etcd is not None:
            etcd.stop(grace=5.0)
        if layout is not None:
            shutil.rmtree(layout.directory, ignore_errors=True)

    async def astop(self) -> None:
        """Like :meth:`stop`, in a worker thread, shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- startup steps (shared by start and astart) -----------------------------------------

    def _prepare(self) -> Layout:
        sweep_stale_dirs()
        layout = Layout.create()
        with self._lock:
            self._layout = layout
        with _running_lock:
            _running.add(self)
        self._pending = layout.write_pki()
        return layout

    def _check_stopped(self) -> None:
        if self._layout is not None:
            raise RuntimeError(f"{self!r} is already running; stop() it first")

    @staticmethod
    def _require(value: _T | None) -> _T:
        # Startup steps run in a fixed order; a None here means stop() raced a start.
        if value is None:
            raise ControlPlaneError("the control plane was stopped during startup")
        return value

    def _spawn_etcd(self) -> ManagedProcess:
        binaries, layout = self._require(self._binaries), self._require(self._layout)
        command = layout.etcd_command(binaries.etcd)
        self._etcd = ManagedProcess("etcd", command, layout.directory / "etcd.log")
        return self._etcd

    def _spawn_apiserver(self) -> ManagedProcess:
        binaries, layout = self._require(self._binaries), self._require(self._layout)
        command = layout.apiserver_command(binaries.kube_apiserver, self._apiserver_args)
        log = layout.directory / "kube-apiserver.log"
        self._apiserver = ManagedProcess("kube-apiserver", command, log)
        return self._apiserver

    def _apiserver_ready(self) -> bool:
        layout, handle = self._require(self._layout), self._require(self._pending)
        return layout.apiserver_ready(handle)

    def _finish(self) -> None:
        handle = self._require(self._pending)
        dirs = self._crd_dirs if self._crd_dirs is not None else default_crd_dirs()
        install_crds(handle.rest(), load_crds(dirs), timeout=self._start_timeout)
        with self._lock:
            self._handle = handle


@atexit.register
def _stop_all_at_exit() -> None:
    # Registered after _process's handler, so it runs first (atexit is LIFO) and removes the
    # temporary directories too, not only the processes.
    with _running_lock:
        planes = list(_running)
    for plane in planes:
        plane.stop()

"""``LocalControlPlane``: a real etcd + kube-apiserver on loopback ports, for tests.

No kubelet, scheduler or controller-manager runs: objects are stored, validated, admitted
and authorized exactly as in a cluster, but never reconciled (a deleted namespace stays
``Terminating``, a Deployment never gets pods). Launch details live in ``_launch``.

Fault injection (``freeze``/``thaw``/``frozen``, ``terminate``, ``kill``, ``restart``) acts
on the two processes by name. A restarted process gets the very same command line: same
ports, certificates and etcd data, so clients holding the kubeconfig simply reconnect.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, TypeVar, final

import anyio
import anyio.to_thread

from ._binaries import Binaries, ensure_binaries
from ._cluster import ClusterHandle
from ._crds import _served_paths, default_crd_dirs, install_crds, load_crds
from ._launch import (
    ControlPlaneError,
    Layout,
    PortTaken,
    await_ready,
    check_alive,
    sweep_stale_dirs,
    wait_ready,
)
from ._process import Frozen, ManagedProcess

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = ["ControlPlaneError", "LocalControlPlane"]

_T = TypeVar("_T")
# A port picked by free_port() can be taken by someone else before our child binds it; such a
# start is retried with new ports this many times.
_START_ATTEMPTS: Final = 3
ETCD: Final = "etcd"
APISERVER: Final = "kube-apiserver"
# Start order; freezing and stopping go the other way (the apiserver never sees etcd gone).
PROCESS_NAMES: Final = (ETCD, APISERVER)
# SIGTERM grace periods: the apiserver drains requests, etcd only syncs its WAL.
_GRACE: Final = {APISERVER: 10.0, ETCD: 5.0}


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

    Faults can be injected into the two processes, named ``"etcd"`` and
    ``"kube-apiserver"``: :meth:`freeze`/:meth:`thaw` (SIGSTOP/SIGCONT) or the
    :meth:`frozen` context manager, :meth:`terminate` (SIGTERM), :meth:`kill` (SIGKILL) and
    :meth:`restart`. A frozen process is always resumed before it is stopped.
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
        self._crd_paths: list[str] = []  # list endpoints of the installed CRDs
        self._down: set[str] = set()  # stopped on purpose (terminate/kill), until restart
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

    def wait_allowed(
        self,
        user: str,
        verb: str,
        resource: str,
        *,
        group: str = "",
        namespace: str | None = None,
        groups: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        """Block until the authorizer lets ``user`` ``verb`` ``resource``; see the handle.

        Args:
            user: The user name.
            verb: The verb.
            resource: The resource's plural (``/subresource`` if any).
            group: Its API group.
            namespace: The namespace, or None.
            groups: The user's groups.
            timeout: Seconds to wait.
        """
        self.handle.wait_allowed(
            user, verb, resource, group=group, namespace=namespace, groups=groups, timeout=timeout
        )

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
        """Raise if etcd or the apiserver has exited, unless :meth:`terminate` or
        :meth:`kill` stopped it on purpose.

        Raises:
            ControlPlaneError: A process is gone; the message holds the tail of its log.
        """
        for process in (self._etcd, self._apiserver):
            if process is not None and process.name not in self._down:
                check_alive(process)

    # -- fault injection --------------------------------------------------------------------

    @property
    def states(self) -> dict[str, str]:
        """The state of each process by name: ``running``, ``frozen``, ``stopped`` (by
        :meth:`terminate` or :meth:`kill`, until :meth:`restart`) or ``exited`` (it died)."""
        states = {}
        for process in (self._etcd, self._apiserver):
            if process is None:
                continue
            if process.name in self._down:
                states[process.name] = "stopped"
            elif not process.running:
                states[process.name] = "exited"
            else:
                states[process.name] = "frozen" if process.frozen else "running"
        return states

    def freeze(self, *names: str) -> None:
        """Stop processes with SIGSTOP, as a kernel, debugger or VM pause would.

        A frozen process keeps its sockets: connections stay open and every request to it
        waits (no error, no timeout of its own) until :meth:`thaw`. A frozen etcd makes
        every write and every consistent read through the apiserver wait; a frozen
        apiserver makes every request wait. Returns once every thread is stopped.
        Idempotent; not counted (one :meth:`thaw` undoes any number of freezes).

        Args:
            *names: ``"etcd"`` and/or ``"kube-apiserver"``.

        Raises:
            ValueError: No name, or an unknown one.
            RuntimeError: The control plane or that process is not running.
            ControlPlaneError: The process died (the message ends with its log tail).
        """
        if not names:
            raise ValueError(f"name at least one process to freeze: {PROCESS_NAMES}")
        for process in self._processes(names, reverse=True):
            if process.name in self._down:
                raise RuntimeError(f"{process.name} is stopped; restart() it first")
            check_alive(process)
            try:
                process.freeze()
            except ProcessLookupError:
                check_alive(process)  # raises with the log tail
                raise

    def thaw(self, *names: str) -> None:
        """Resume frozen processes with SIGCONT (all of them if no name is given).

        Idempotent: thawing a process that is not frozen, or a stopped control plane, does
        nothing. etcd is resumed before the apiserver.

        Args:
            *names: ``"etcd"`` and/or ``"kube-apiserver"``; none: every process.

        Raises:
            ValueError: An unknown name.
        """
        self._check_names(names)
        if self._handle is None:
            return  # stopped: nothing can be frozen
        for process in self._processes(names or PROCESS_NAMES):
            process.thaw()

    def frozen(self, *names: str) -> Frozen:
        """A context manager that freezes processes on entry and thaws them on exit.

        ``with cp.frozen("etcd"):`` or ``async with cp.frozen("etcd"):``. The processes
        are thawed however the block ends; :meth:`stop`, interpreter exit and the pytest
        fixtures thaw them too.

        Args:
            *names: ``"etcd"`` and/or ``"kube-apiserver"``.

        Returns:
            The context manager (it yields nothing).

        Raises:
            ValueError: No name, or an unknown one.
        """
        if not names:
            raise ValueError(f"name at least one process to freeze: {PROCESS_NAMES}")
        self._check_names(names)
        return Frozen(lambda: self.freeze(*names), lambda: self.thaw(*names), names)

    def terminate(self, name: str) -> None:
        """Stop one process with SIGTERM (SIGKILL after a grace period); it stays down.

        Clients see connections refused (apiserver) or the apiserver failing requests
        (etcd) until :meth:`restart`. A frozen process is thawed so that it handles the
        signal.

        Args:
            name: ``"etcd"`` or ``"kube-apiserver"``.

        Raises:
            ValueError: An unknown name.
            RuntimeError: The control plane is not running.
        """
        (process,) = self._processes((name,))
        process.stop(grace=_GRACE[process.name])
        self._down.add(process.name)

    async def aterminate(self, name: str) -> None:
        """Like :meth:`terminate`, in a worker thread, shielded from cancellation.

        Args:
            name: ``"etcd"`` or ``"kube-apiserver"``.
        """
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.terminate, name)

    def kill(self, name: str) -> None:
        """``kill -9`` one process (frozen or not) and reap it; it stays down.

        Nothing is flushed or closed cleanly: clients' connections are reset. etcd runs
        with ``--unsafe-no-fsync``, but its data survives a killed process (only a machine
        crash would lose it), so :meth:`restart` finds every object again.

        Args:
            name: ``"etcd"`` or ``"kube-apiserver"``.

        Raises:
            ValueError: An unknown name.
            RuntimeError: The control plane is not running.
        """
        (process,) = self._processes((name,))
        process.kill()
        self._down.add(process.name)

    async def akill(self, name: str) -> None:
        """Like :meth:`kill`, in a worker thread, shielded from cancellation.

        Args:
            name: ``"etcd"`` or ``"kube-apiserver"``.
        """
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.kill, name)

    def restart(self, name: str, *, kill: bool = False) -> None:
        """Stop one process (if it still runs) and start it again; block until it is ready.

        The new process has the same command line: the same port, certificates and etcd
        data, so every kubeconfig keeps working and every object is still there; clients
        reconnect on their next request. Readiness: for ``"kube-apiserver"``, ``/readyz``
        answers 200 and every installed CRD is served again; for ``"etcd"``, it is healthy
        and, if the apiserver is running, ``/readyz`` answers 200 again.

        Args:
            name: ``"etcd"`` or ``"kube-apiserver"``.
            kill: Stop it with SIGKILL (a crash) instead of SIGTERM (a graceful shutdown).

        Raises:
            ValueError: An unknown name.
            RuntimeError: The control plane is not running, or the apiserver is to be
                restarted while etcd is frozen or stopped (it could never become ready).
            ControlPlaneError: The process exited or was not ready within the start
                timeout (the message ends with its log tail), e.g. because something else
                took its port meanwhile.
        """
        probes = self._restart(name, kill)
        deadline = time.monotonic() + self._start_timeout
        for ready, process in probes:
            wait_ready(ready, process, deadline)

    async def arestart(self, name: str, *, kill: bool = False) -> None:
        """Like :meth:`restart`, without blocking the event loop.

        Args:
            name: ``"etcd"`` or ``"kube-apiserver"``.
            kill: Stop it with SIGKILL instead of SIGTERM.
        """
        probes = await anyio.to_thread.run_sync(lambda: self._restart(name, kill))
        deadline = time.monotonic() + self._start_timeout
        for ready, process in probes:
            await await_ready(ready, process, deadline)

    def _restart(self, name: str, kill: bool) -> list[tuple[Callable[[], bool], ManagedProcess]]:
        """Stop and respawn ``name``; returns the readiness probes to wait for, in order."""
        (process,) = self._processes((name,))
        if process.name == APISERVER and self.states.get(ETCD) != "running":
            raise RuntimeError(
                f"etcd is {self.states.get(ETCD)}: the apiserver could never become ready; "
                "thaw or restart etcd first"
            )
        if kill:
            process.kill()
        else:
            process.stop(grace=_GRACE[process.name])
        self._down.add(process.name)
        layout = self._require(self._layout)
        if process.name == ETCD:
            probes = [(layout.etcd_healthy, self._spawn_etcd())]
            apiserver = self._apiserver
            if apiserver is not None and self.states.get(APISERVER) == "running":
                probes.append((self._apiserver_ready, apiserver))
        else:
            probes = [(self._apiserver_serves_crds, self._spawn_apiserver())]
        self._down.discard(process.name)
        return probes

    def _check_names(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in PROCESS_NAMES:
                raise ValueError(f"process name must be one of {PROCESS_NAMES}, got {name!r}")

    def _processes(self, names: Sequence[str], *, reverse: bool = False) -> list[ManagedProcess]:
        """The processes named (exited ones included), in start order or the reverse."""
        self._check_names(names)
        with self._lock:
            known = {p.name: p for p in (self._etcd, self._apiserver) if p is not None}
            if self._handle is None or len(known) != len(PROCESS_NAMES):
                raise RuntimeError("the control plane is not running; use start() or `with`")
        order = reversed(PROCESS_NAMES) if reverse else PROCESS_NAMES
        return [known[name] for name in order if name in names]

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
        """Stop the apiserver, then etcd, and delete the temporary directory. Idempotent.

        Frozen processes are thawed first: nothing stopped by SIGSTOP is ever left behind.
        """
        with self._lock:
            apiserver, etcd, layout = self._apiserver, self._etcd, self._layout
            self._apiserver = self._etcd = self._handle = self._pending = self._layout = None
            self._down.clear()
        with _running_lock:
            _running.discard(self)
        # A frozen etcd would stall the apiserver's graceful shutdown until its SIGKILL.
        if etcd is not None:
            with contextlib.suppress(TimeoutError):
                etcd.thaw()
        # The apiserver first: it would otherwise spin on etcd reconnects while shutting down.
        if apiserver is not None:
            apiserver.stop(grace=_GRACE[APISERVER])
        if etcd is not None:
            etcd.stop(grace=_GRACE[ETCD])
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

    def _apiserver_serves_crds(self) -> bool:
        if not self._apiserver_ready():
            return False
        rest = self._require(self._pending).rest()
        try:
            return all(rest.request("GET", path, timeout=2)[0] == 200 for path in self._crd_paths)
        except OSError:
            return False

    def _finish(self) -> None:
        handle = self._require(self._pending)
        dirs = self._crd_dirs if self._crd_dirs is not None else default_crd_dirs()
        manifests = load_crds(dirs)
        install_crds(handle.rest(), manifests, timeout=self._start_timeout)
        self._crd_paths = [path for manifest in manifests for path in _served_paths(manifest)]
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

"""How one control plane is laid out on disk and launched: files, ports, flags, readiness.

The flags mirror controller-runtime envtest (``pkg/internal/testing/controlplane``): RBAC
authorization, the ServiceAccount admission plugin disabled (no controller-manager creates
``default`` service accounts here), a service-account issuer and signing key (mandatory since
1.20) and privileged pods allowed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, final

import anyio
import anyio.to_thread
import attrs

from ._certs import CertificateAuthority, generate_service_account_key
from ._cluster import CA_CERT, CA_KEY, ClusterHandle
from ._kubeconfig import write_kubeconfig
from ._process import ManagedProcess, free_port
from ._rest import RestClient

__all__ = [
    "ControlPlaneError",
    "Layout",
    "PortTaken",
    "await_ready",
    "check_alive",
    "sweep_stale_dirs",
    "wait_ready",
]

DIR_PREFIX: Final = "konductor-cp-"
ADMIN_USER: Final = "konductor-admin"


class ControlPlaneError(RuntimeError):
    """The control plane failed to start or died; the message ends with its log tail."""


class PortTaken(ControlPlaneError):
    """A child lost the race for a port picked by ``free_port`` (the start is retried)."""


def sweep_stale_dirs() -> None:
    """Remove directories of control planes whose owning Python process no longer exists.

    Its children died with it (PDEATHSIG) but nobody deleted the files. The owner's pid is
    part of the directory name.
    """
    for path in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*-*"):
        try:
            owner = int(path.name.removeprefix(DIR_PREFIX).split("-", 1)[0])
            os.kill(owner, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, but someone else's
            continue


@final
@attrs.frozen
class Layout:
    """The directory and ports of one control plane, and the command lines they imply."""

    directory: Path
    apiserver_port: int
    etcd_client_port: int
    etcd_peer_port: int

    @classmethod
    def create(cls) -> Layout:
        """Make a fresh private temporary directory and pick free loopback ports.

        Returns:
            The layout (nothing written yet besides the empty directory).
        """
        directory = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-"))
        return cls(directory, free_port(), free_port(), free_port())

    @property
    def pki(self) -> Path:
        """Certificates and keys."""
        return self.directory / "pki"

    @property
    def server(self) -> str:
        """The apiserver URL."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    def write_pki(self) -> ClusterHandle:
        """Generate the CA, serving cert, service-account key and the admin kubeconfig.

        Returns:
            The handle of the cluster-to-be.
        """
        self.pki.mkdir()
        ca = CertificateAuthority.generate()
        ca.write(self.pki / CA_CERT, self.pki / CA_KEY)
        ca.issue_serving_cert().write(self.pki / "apiserver.crt", self.pki / "apiserver.key")
        signing = generate_service_account_key()
        (self.pki / "sa.pub").write_bytes(signing.public_pem)
        (self.pki / "sa.key").touch(mode=0o600)
        (self.pki / "sa.key").write_bytes(signing.private_pem)
        admin = ca.issue_client_cert(ADMIN_USER, ["system:masters"])
        kubeconfig = write_kubeconfig(
            self.directory / "kubeconfig.yaml",
            server=self.server,
            ca_pem=ca.cert_pem,
            user=ADMIN_USER,
            cert_pem=admin.cert_pem,
            key_pem=admin.key_pem,
        )
        return ClusterHandle(kubeconfig_path=kubeconfig, server=self.server, pki_dir=self.pki)

    def etcd_command(self, binary: Path) -> list[str]:
        """The etcd command line: a single member, loopback only, data in our directory."""
        client = f"http://127.0.0.1:{self.etcd_client_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [
            str(binary),
            "--name=konductor",
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=konductor={peer}",
            # Test data is disposable: skipping fsync makes every write much cheaper.
            "--unsafe-no-fsync=true",
            # A lone member has nobody to hear heartbeats from; the default 1s election
            # timeout only delays its first self-election (~1s of every startup).
            "--heartbeat-interval=10",
            "--election-timeout=100",
        ]

    def apiserver_command(self, binary: Path, extra: Sequence[str] = ()) -> list[str]:
        """The kube-apiserver command line (envtest's defaults), then ``extra`` flags."""
        pki = self.pki
        return [
            str(binary),
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_client_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / CA_CERT}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            # As envtest: without a controller-manager no `default` ServiceAccount ever
            # appears, and the plugin would reject every pod.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            *extra,
        ]

    def etcd_healthy(self) -> bool:
        """Whether etcd answers ``/health`` with ``"health":"true"`` (it has a leader)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.etcd_client_port, timeout=2)
        try:
            connection.request("GET", "/health")
            return b'"health":"true"' in connection.getresponse().read()
        except OSError:
            return False
        finally:
            connection.close()

    def apiserver_ready(self, handle: ClusterHandle) -> bool:
        """Whether ``/readyz`` answers 200 (all post-start hooks done, RBAC bootstrapped)."""
        try:
            status, _ = RestClient(handle.kubeconfig_path).request("GET", "/readyz", timeout=2)
        except OSError:
            return False
        return status == 200


def check_alive(process: ManagedProcess) -> None:
    """Raise if ``process`` has exited.

    Args:
        process: The process to check.

    Raises:
        PortTaken: It exited because its port was taken meanwhile.
        ControlPlaneError: It exited for another reason.
    """
    if process.running:
        return
    tail = process.tail()
    error = PortTaken if "address already in use" in tail else ControlPlaneError
    raise error(
        f"{process.name} exited with status {process.returncode}; "
        f"last lines of {process.log_path}:\n{tail}"
    )


def _not_ready(process: ManagedProcess) -> ControlPlaneError:
    return ControlPlaneError(
        f"{process.name} not ready within the start timeout; "
        f"last lines of {process.log_path}:\n{process.tail()}"
    )


def wait_ready(ready: Callable[[], bool], process: ManagedProcess, deadline: float) -> None:
    """Poll ``ready`` until it holds, the process dies, or ``deadline`` (monotonic) passes.

    Args:
        ready: The readiness probe.
        process: The process being waited for (checked for liveness, quoted in errors).
        deadline: ``time.monotonic()`` value after which to give up.

    Raises:
        ControlPlaneError: The process died or the deadline passed.
    """
    delay = 0.02  # startup only: a short backoff keeps the measured startup time honest
    while True:
        check_alive(process)
        if ready():
            return
        if time.monotonic() > deadline:
            raise _not_ready(process)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


async def await_ready(ready: Callable[[], bool], process: ManagedProcess, deadline: float) -> None:
    """:func:`wait_ready` for async callers: probes in a worker thread, sleeps with anyio.

    Args:
        ready: The readiness probe.
        process: The process being waited for.
        deadline: ``time.monotonic()`` value after which to give up.

    Raises:
        ControlPlaneError: The process died or the deadline passed.
    """
    delay = 0.02
    while True:
        check_alive(process)
        if await anyio.to_thread.run_sync(ready):
            return
        if time.monotonic() > deadline:
            raise _not_ready(process)
        await anyio.sleep(delay)
        delay = min(delay * 1.5, 0.25)

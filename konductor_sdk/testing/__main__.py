"""``python -m konductor_sdk.testing``: build the binaries, or run a control plane by hand.

``build`` is what ``make binaries`` runs; ``up`` starts a control plane with the CRDs
installed and keeps it running until Ctrl-C or SIGTERM, for poking at it with kubectl or
running the examples against it.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from ._binaries import BinariesError, ensure_binaries, ensure_helm
from ._controlplane import ControlPlaneError, LocalControlPlane


@click.group()
def main() -> None:
    """Local Kubernetes control plane (etcd + kube-apiserver) for Konductor tests."""


@main.command()
@click.option("--helm", is_flag=True, help="Also find or build helm (for the chart tests).")
def build(helm: bool) -> None:
    """Find or build kube-apiserver and etcd (and helm), then print their paths."""
    try:
        binaries = ensure_binaries()
        helm_path = ensure_helm() if helm else None
    except BinariesError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"kube-apiserver: {binaries.kube_apiserver}")
    click.echo(f"etcd:           {binaries.etcd}")
    if helm_path is not None:
        click.echo(f"helm:           {helm_path}")


@main.command()
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also copy the admin kubeconfig here (it is removed again on exit).",
)
@click.option(
    "--crds",
    "crd_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Install the CRDs of this directory instead of the default ones (repeatable).",
)
def up(kubeconfig_out: Path | None, crd_dirs: tuple[Path, ...]) -> None:
    """Start a control plane and keep it running until Ctrl-C or SIGTERM."""
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # SIGTERM would otherwise kill us without cleanup; route both signals to one event so
    # shutdown runs on the main thread, in order, whichever arrives.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    plane = LocalControlPlane(crd_dirs=crd_dirs or None)
    try:
        plane.start()
    except (BinariesError, ControlPlaneError) as error:
        raise click.ClickException(str(error)) from error
    try:
        kubeconfig = plane.kubeconfig_path
        if kubeconfig_out is not None:
            shutil.copyfile(kubeconfig, kubeconfig_out)
            kubeconfig_out.chmod(0o600)  # it holds the admin's private key
            kubeconfig = kubeconfig_out.resolve()
        click.echo(f"control plane ready in {plane.startup_seconds:.1f}s at {plane.server}")
        click.echo(f"kubeconfig: {kubeconfig}")
        click.echo(f"export KUBECONFIG={kubeconfig}")
        click.echo("Press Ctrl-C to stop.", err=True)
        sys.stdout.flush()
        while not stopping.wait(timeout=1.0):
            # A crashed process is reported (with its log) instead of leaving a dead endpoint.
            try:
                plane.check_alive()
            except ControlPlaneError as error:
                raise click.ClickException(str(error)) from error
    finally:
        click.echo("stopping control plane...", err=True)
        plane.stop()
        if kubeconfig_out is not None:
            kubeconfig_out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

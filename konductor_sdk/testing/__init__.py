"""A real local Kubernetes control plane for tests ("envtest for Python").

:class:`LocalControlPlane` runs etcd and kube-apiserver on loopback ports with the Konductor
CRDs installed; :func:`ensure_binaries` finds or builds the two executables; the pytest
plugin (``konductor_sdk.testing.pytest_plugin``) shares one control plane across a whole
test session, xdist workers included, and gives tests that inject faults (freezing or
restarting etcd and the apiserver) a private one. See ``docs/testing.md``.
"""

from ._binaries import Binaries as Binaries
from ._binaries import BinariesError as BinariesError
from ._binaries import ensure_binaries as ensure_binaries
from ._cluster import ClusterHandle as ClusterHandle
from ._controlplane import ControlPlaneError as ControlPlaneError
from ._controlplane import LocalControlPlane as LocalControlPlane
from ._process import Frozen as Frozen

__all__ = [
    "Binaries",
    "BinariesError",
    "ClusterHandle",
    "ControlPlaneError",
    "Frozen",
    "LocalControlPlane",
    "ensure_binaries",
]

"""Locate or build the ``kube-apiserver`` and ``etcd`` binaries the control plane runs.

Lookup order, per binary (the first two are controller-runtime envtest's conventions, so
binaries downloaded with ``setup-envtest`` work unchanged):

1. ``TEST_ASSET_KUBE_APISERVER`` / ``TEST_ASSET_ETCD``: path to the binary itself.
2. ``KUBEBUILDER_ASSETS``: a directory holding ``kube-apiserver`` and ``etcd``.
3. The build cache: ``${XDG_CACHE_HOME:-~/.cache}/konductor/bin/<k8s>-<etcd>-<hash>/``,
   filled on first use by ``go build`` of the wrapper modules shipped in ``gomod/``. The
   directory name hashes those modules' ``go.mod``/``go.sum``, so bumping a version builds
   into a fresh directory and every later run costs nothing.

Building is atomic (``go build -o`` a temporary name, then ``rename``) and serialised by
an ``fcntl`` lock in the cache directory, so pytest-xdist workers or two terminals racing
on a cold cache build each binary once.

A second, optional target is ``helm`` (:func:`ensure_helm`, ``python -m
konductor_sdk.testing build --helm``), built the same way from ``gomod/helm`` into its own
``helm-<version>-<hash>/`` directory; ``TEST_ASSET_HELM`` points at a prebuilt one instead.
The chart tests use it; nothing else needs it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, final

import attrs

__all__ = ["Binaries", "BinariesError", "cache_root", "ensure_binaries", "ensure_helm"]

_GOMOD_DIR: Final = Path(__file__).resolve().parent / "gomod"


class BinariesError(RuntimeError):
    """The binaries could not be found or built (missing ``go``, failed build, bad path)."""


@final
@attrs.frozen
class Binaries:
    """Paths to the two executables a :class:`LocalControlPlane` starts."""

    kube_apiserver: Path
    etcd: Path


@attrs.frozen
class _GoBinary:
    name: str  # file name in the cache and in KUBEBUILDER_ASSETS
    env_var: str  # envtest's per-binary override
    module_dir: Path  # the wrapper go module to build in
    package: str  # the main package to build
    version_module: str  # module whose required version names the binary
    minutes: int  # rough cold-cache build time on 2 cores, for the progress message
    # Packages whose gitVersion/gitMajor/gitMinor are stamped at link time, as Kubernetes'
    # own build does (hack/lib/version.sh). Without it /version reports v0.0.0-master and
    # kubectl warns about version skew.
    version_packages: tuple[str, ...] = ()
    # Variables set to the version as is (helm's internal/version.version).
    version_vars: tuple[str, ...] = ()
    # (variable prefix, module): ``<prefix>Major``/``<prefix>Minor`` get the Kubernetes
    # version a ``k8s.io/*`` module (v0.N.x) stands for, 1 and N (helm's default
    # .Capabilities.KubeVersion, as its own Makefile sets it).
    kube_version_vars: tuple[tuple[str, str], ...] = ()

    def ldflags(self) -> str:
        flags = ["-s", "-w"]
        version = self.version()
        flags += [f"-X {var}={version}" for var in self.version_vars]
        for prefix, module in self.kube_version_vars:
            minor = self.version(module).removeprefix("v").split(".")[1]
            flags += [f"-X {prefix}Major=1", f"-X {prefix}Minor={minor}"]
        major, minor = version.removeprefix("v").split(".")[:2]
        for package in self.version_packages:
            flags += [
                f"-X {package}.gitVersion={version}",
                f"-X {package}.gitMajor={major}",
                f"-X {package}.gitMinor={minor}",
                f"-X {package}.gitTreeState=clean",
            ]
        return " ".join(flags)

    def version(self, module: str | None = None) -> str:
        module = module or self.version_module
        text = (self.module_dir / "go.mod").read_text()
        pattern = rf"(?m)^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)"
        match = re.search(pattern, text)
        if match is None:
            raise BinariesError(f"{module} is not required in {self.module_dir}")
        return match.group(1)


_APISERVER: Final = _GoBinary(
    name="kube-apiserver",
    env_var="TEST_ASSET_KUBE_APISERVER",
    module_dir=_GOMOD_DIR / "kube-apiserver",
    package="k8s.io/kubernetes/cmd/kube-apiserver",
    version_module="k8s.io/kubernetes",
    minutes=10,
    version_packages=("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"),
)
_ETCD: Final = _GoBinary(
    name="etcd",
    env_var="TEST_ASSET_ETCD",
    module_dir=_GOMOD_DIR / "etcd",
    package="go.etcd.io/etcd/server/v3",
    version_module="go.etcd.io/etcd/server/v3",
    minutes=2,
)
_HELM: Final = _GoBinary(
    name="helm",
    env_var="TEST_ASSET_HELM",
    module_dir=_GOMOD_DIR / "helm",
    package="helm.sh/helm/v3/cmd/helm",
    version_module="helm.sh/helm/v3",
    minutes=4,
    version_vars=("helm.sh/helm/v3/internal/version.version",),
    kube_version_vars=(
        ("helm.sh/helm/v3/pkg/lint/rules.k8sVersion", "k8s.io/client-go"),
        ("helm.sh/helm/v3/pkg/chartutil.k8sVersion", "k8s.io/client-go"),
    ),
)


def cache_root() -> Path:
    """Return the directory holding every versioned binary directory.

    Returns:
        ``${XDG_CACHE_HOME:-~/.cache}/konductor/bin``.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "konductor" / "bin"


def _cache_dir() -> Path:
    digest = hashlib.sha256()
    for binary in (_APISERVER, _ETCD):
        for name in ("go.mod", "go.sum"):
            digest.update((binary.module_dir / name).read_bytes())
        digest.update(binary.ldflags().encode())  # a changed build recipe is a new binary
    versions = f"{_APISERVER.version()}-{_ETCD.version()}"
    return cache_root() / f"{versions}-{digest.hexdigest()[:12]}"


def _helm_cache_dir() -> Path:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((_HELM.module_dir / name).read_bytes())
    digest.update(_HELM.ldflags().encode())
    return cache_root() / f"helm-{_HELM.version()}-{digest.hexdigest()[:12]}"


def _from_environment(binary: _GoBinary) -> Path | None:
    explicit = os.environ.get(binary.env_var)
    if explicit:
        return _check_executable(Path(explicit), f"${binary.env_var}")
    if binary is _HELM:  # not an envtest binary: KUBEBUILDER_ASSETS never holds it
        return None
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return _check_executable(Path(assets) / binary.name, "$KUBEBUILDER_ASSETS")
    return None


def _check_executable(path: Path, source: str) -> Path:
    # Fail loudly rather than silently building: a wrong override is a configuration bug.
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BinariesError(f"{path} (from {source}) is not an executable file")
    return path.resolve()


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _go_executable() -> str:
    go = shutil.which("go")
    if go is None:
        raise BinariesError(
            "building kube-apiserver/etcd needs the Go toolchain (>= 1.26), but `go` is not on "
            "PATH. Install Go from https://go.dev/dl/, or point TEST_ASSET_KUBE_APISERVER and "
            "TEST_ASSET_ETCD (or KUBEBUILDER_ASSETS) at prebuilt binaries."
        )
    return go


def _build(binary: _GoBinary, target: Path) -> None:
    go = _go_executable()
    version = binary.version()
    print(
        f"konductor: building {binary.name} {version} (first run only, ~{binary.minutes} min)...",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    # A per-process temporary name: a build killed half-way never leaves a file that a later
    # run would mistake for a finished binary.
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    env = {**os.environ, "CGO_ENABLED": "0"}
    command = [go, "build", "-trimpath", "-ldflags", binary.ldflags(), "-o", str(temporary)]
    try:
        result = subprocess.run(
            [*command, binary.package],
            cwd=binary.module_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise BinariesError(
                f"`go build {binary.package}` failed in {binary.module_dir} "
                f"(exit {result.returncode}):\n{tail}"
            )
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    print(
        f"konductor: built {target} in {time.monotonic() - started:.0f}s",
        file=sys.stderr,
        flush=True,
    )


def _ensure_built(binary: _GoBinary, directory: Path) -> Path:
    target = directory / binary.name
    if target.is_file():  # the common case: no lock, no subprocess
        return target
    with _locked(directory):
        # Re-check under the lock: another process may have finished the build while we waited.
        if not target.is_file():
            _build(binary, target)
    return target


def ensure_binaries() -> Binaries:
    """Return the ``kube-apiserver`` and ``etcd`` binaries, building them on first use.

    Environment overrides (envtest's names) win over the build cache; see the module
    docstring for the full lookup order. A cold build takes minutes and prints progress to
    stderr; every later call returns immediately.

    Returns:
        The resolved paths of both executables.

    Raises:
        BinariesError: an override points at a missing file, ``go`` is not installed, or the
            build failed (the exception carries the tail of the compiler output).
    """
    apiserver = _from_environment(_APISERVER)
    etcd = _from_environment(_ETCD)
    if apiserver is None or etcd is None:
        directory = _cache_dir()
        if etcd is None:  # etcd first: it is quick, so a broken toolchain shows up fast
            etcd = _ensure_built(_ETCD, directory)
        if apiserver is None:
            apiserver = _ensure_built(_APISERVER, directory)
    return Binaries(kube_apiserver=apiserver, etcd=etcd)


def ensure_helm() -> Path:
    """Return a ``helm`` (v3) binary, building it from ``gomod/helm`` on first use.

    ``TEST_ASSET_HELM`` (a path to the binary) wins over the build cache. The build is
    cached, locked and atomic exactly like :func:`ensure_binaries`' (its own directory,
    ``helm-<version>-<hash>``, under :func:`cache_root`).

    Returns:
        The resolved path of the executable.

    Raises:
        BinariesError: ``TEST_ASSET_HELM`` points at a missing file, ``go`` is not
            installed, or the build failed.
    """
    return _from_environment(_HELM) or _ensure_built(_HELM, _helm_cache_dir())

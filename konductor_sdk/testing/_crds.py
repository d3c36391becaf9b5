"""Install CustomResourceDefinitions and wait until the apiserver actually serves them.

``Established=True`` on a CRD is not the end of the story: the discovery and REST handlers for
the new resource are wired up asynchronously, and a list request issued right after
``Established`` can still 404 for a moment. A test that races that window fails at random,
so :func:`install_crds` also waits for a 200 on the list endpoint of every served version.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from ._rest import RestClient, RestError

__all__ = [
    "default_crd_dirs",
    "default_policy_dirs",
    "install_crds",
    "install_policies",
    "load_crds",
    "load_policies",
]

_CRD_PATH: Final = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRDS_DIR_ENV: Final = "KONDUCTOR_CRDS_DIR"
POLICIES_DIR_ENV: Final = "KONDUCTOR_POLICIES_DIR"
GROUP: Final = "sync.konductor.io"
PROBE_LABEL: Final = "sync.konductor.io/policy-probe"
_ADMISSION: Final = "/apis/admissionregistration.k8s.io/v1"
_POLICY_KINDS: Final = {
    "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
    "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}


def default_crd_dirs() -> list[Path]:
    """Return the directories whose CRDs a control plane installs by default.

    Returns:
        The ``os.pathsep``-separated directories of ``$KONDUCTOR_CRDS_DIR`` if set, else the
        ``crds`` directory shipped inside the ``konductor_sdk`` package.
    """
    override = os.environ.get(CRDS_DIR_ENV)
    if override:
        return [Path(entry) for entry in override.split(os.pathsep) if entry]
    return [Path(__file__).resolve().parent.parent / "crds"]


def default_policy_dirs() -> list[Path]:
    """Return the directories whose admission policies a control plane installs by default.

    Returns:
        The ``os.pathsep``-separated directories of ``$KONDUCTOR_POLICIES_DIR`` if set, else
        the ``policies`` directory shipped inside the ``konductor_sdk`` package.
    """
    override = os.environ.get(POLICIES_DIR_ENV)
    if override:
        return [Path(entry) for entry in override.split(os.pathsep) if entry]
    return [Path(__file__).resolve().parent.parent / "policies"]


def load_policies(dirs: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Read every admission policy and binding from the YAML files of ``dirs``.

    Raises:
        ValueError: A document is not a (Mutating|Validating)AdmissionPolicy(Binding).
    """
    manifests: list[dict[str, Any]] = []
    for directory in map(Path, dirs):
        if not directory.is_dir():
            continue
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            for document in yaml.safe_load_all(path.read_text()):
                if document is None:
                    continue
                if document.get("kind") not in _POLICY_KINDS:
                    raise ValueError(f"{path}: not an admission policy: {document.get('kind')}")
                manifests.append(document)
    return manifests


def install_policies(
    rest: RestClient, manifests: Sequence[dict[str, Any]], *, timeout: float = 60.0
) -> list[str]:
    """Create (or replace) admission policies and bindings, then wait until they are in force.

    The apiserver compiles a policy asynchronously after it is stored. Konductor's
    ``konductor-objects`` policy refuses to create any object carrying the label
    :data:`PROBE_LABEL`, and (with ``konductor-creator``) stamps the creator on every
    create; so "in force" is observed directly: a dry-run create of a labelled probe is
    refused, and one without the label is accepted with the creator annotation set.

    Returns:
        The names of the installed policies and bindings.

    Raises:
        TimeoutError: The policies were not in force within ``timeout``.
    """
    names = []
    for manifest in manifests:
        plural = _POLICY_KINDS[manifest["kind"]]
        _apply(rest, manifest, f"{_ADMISSION}/{plural}")
        names.append(manifest["metadata"]["name"])
    if any(m["metadata"]["name"] == "konductor-objects" for m in manifests):
        _wait_in_force(rest, timeout)
    return names


def _probe(labelled: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "policy-probe-", "namespace": "default"}
    if labelled:
        metadata["labels"] = {PROBE_LABEL: "true"}
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "Session",
        "metadata": metadata,
        "spec": {"holder": "policy-probe", "ttlSeconds": 1, "renewCount": 0},
    }


def _wait_in_force(rest: RestClient, timeout: float) -> None:
    path = f"/apis/{GROUP}/v1alpha1/namespaces/default/sessions?dryRun=All"
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        refused, _ = rest.request("POST", path, _probe(labelled=True))
        status, answer = rest.request("POST", path, _probe(labelled=False))
        annotations = (answer.get("metadata") or {}).get("annotations") or {}
        stamped = status in (200, 201) and f"{GROUP}/creator" in annotations
        if refused in (403, 422) and stamped:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"admission policies not in force after {timeout:.0f}s "
                f"(probe: labelled create -> {refused}, plain create -> {status})"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def load_crds(dirs: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Read every CRD from the ``*.yaml``/``*.yml`` files of ``dirs`` (sorted by file name).

    Missing directories are skipped, so a checkout without CRDs yet still starts.

    Args:
        dirs: Directories to scan (not recursive).

    Returns:
        The CRD manifests.

    Raises:
        ValueError: A document in those files is not a ``CustomResourceDefinition``.
    """
    manifests: list[dict[str, Any]] = []
    for directory in map(Path, dirs):
        if not directory.is_dir():
            continue
        files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
        for path in files:
            for document in yaml.safe_load_all(path.read_text()):
                if document is None:  # an empty document between two '---'
                    continue
                if document.get("kind") != "CustomResourceDefinition":
                    kind = document.get("kind")
                    raise ValueError(f"{path}: expected kind CustomResourceDefinition, got {kind}")
                manifests.append(document)
    return manifests


def _apply(rest: RestClient, manifest: dict[str, Any], collection: str = _CRD_PATH) -> None:
    name = manifest["metadata"]["name"]
    status, answer = rest.request("POST", collection, manifest)
    if status == 409:
        # Already installed (a reused cluster, a second call): replace it, so the running
        # schema is the one on disk.
        current = rest.expect("GET", f"{collection}/{name}")
        body = {**manifest, "metadata": {**manifest["metadata"]}}
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        rest.expect("PUT", f"{collection}/{name}", body)
    elif not 200 <= status < 300:
        raise RestError("POST", collection, status, answer)


def _served_paths(manifest: dict[str, Any]) -> list[str]:
    spec = manifest["spec"]
    return [
        f"/apis/{spec['group']}/{version['name']}/{spec['names']['plural']}?limit=1"
        for version in spec["versions"]
        if version.get("served", True)
    ]


def _is_established(rest: RestClient, name: str) -> bool:
    status, answer = rest.request("GET", f"{_CRD_PATH}/{name}")
    if status != 200:
        return False
    conditions = answer.get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def install_crds(
    rest: RestClient, manifests: Sequence[dict[str, Any]], *, timeout: float = 60.0
) -> list[str]:
    """Create (or replace) the CRDs, then wait until each is Established and served.

    Args:
        rest: A client with permission to manage CRDs.
        manifests: CRD manifests, e.g. from :func:`load_crds`.
        timeout: Seconds to wait for all of them together.

    Returns:
        The names of the installed CRDs.

    Raises:
        TimeoutError: A CRD was not served within ``timeout``.
        RestError: The apiserver rejected a manifest.
    """
    for manifest in manifests:
        _apply(rest, manifest)
    pending = {manifest["metadata"]["name"]: _served_paths(manifest) for manifest in manifests}
    deadline = time.monotonic() + timeout
    delay = 0.02
    while pending:
        for name, paths in list(pending.items()):
            if _is_established(rest, name) and all(
                rest.request("GET", path)[0] == 200 for path in paths
            ):
                del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not served after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    if any(m["spec"]["group"] == GROUP for m in manifests):
        # Konductor's primitives rely on the ownership policies: install them with the CRDs.
        install_policies(rest, load_policies(default_policy_dirs()), timeout=timeout)
    return [manifest["metadata"]["name"] for manifest in manifests]

"""Write kubeconfig files, and read back the small subset the control plane itself needs.

Written kubeconfigs embed their certificates (``*-data`` fields) so they stay valid when
copied elsewhere and work with kubectl, client-go and both Python clients alike.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any, Final, final

import attrs
import yaml

__all__ = ["CONTEXT_NAME", "KubeconfigAccess", "read_kubeconfig", "write_kubeconfig"]

CONTEXT_NAME: Final = "konductor-local"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    cert_pem: bytes,
    key_pem: bytes,
    namespace: str = "default",
) -> Path:
    """Write a single-context kubeconfig authenticating with a client certificate.

    The file is written to a temporary name and renamed, so a reader (another xdist
    worker, a shell running kubectl) never sees half a file.

    Args:
        path: Destination file.
        server: The apiserver URL.
        ca_pem: The CA that signed the serving certificate.
        user: The name of the kubeconfig user entry (also the certificate's CN).
        cert_pem: The client certificate.
        key_pem: The client key.
        namespace: The context's default namespace.

    Returns:
        ``path``.
    """
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert_pem),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [
            {
                "name": CONTEXT_NAME,
                "context": {"cluster": CONTEXT_NAME, "user": user, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file holds a private key: owner-only, like ~/.kube/config.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as stream:
        yaml.safe_dump(document, stream, sort_keys=False)
    os.replace(temporary, path)
    return path


@final
@attrs.frozen
class KubeconfigAccess:
    """What the stdlib REST helper needs from a kubeconfig's current context."""

    server: str
    namespace: str
    ca_pem: bytes | None = None  # None: verify against the system trust store
    insecure: bool = False
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    token: str | None = None


def _named(entries: list[dict[str, Any]], name: str, kind: str, path: Path) -> dict[str, Any]:
    for entry in entries:
        if entry.get("name") == name:
            body: dict[str, Any] = entry.get(kind) or {}
            return body
    raise ValueError(f"{path}: no {kind} named {name!r}")


def _data_or_file(section: dict[str, Any], key: str, base: Path) -> bytes | None:
    if section.get(f"{key}-data"):
        return base64.b64decode(section[f"{key}-data"])
    if section.get(key):
        # Relative paths in a kubeconfig are relative to the kubeconfig file (client-go rule).
        return (base / str(section[key])).read_bytes()
    return None


def read_kubeconfig(path: Path) -> KubeconfigAccess:
    """Extract server, TLS material and credentials of the current context.

    Only static credentials are supported (client certificates, bearer tokens), which covers
    the files this package writes and those of kind, k3d and minikube.

    Args:
        path: The kubeconfig file.

    Returns:
        The current context's access details.

    Raises:
        ValueError: No current context, a dangling reference, or only exec/auth-provider
            credentials.
    """
    document: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    context_name = document.get("current-context")
    if not context_name:
        raise ValueError(f"{path}: current-context is not set")
    context = _named(document.get("contexts") or [], context_name, "context", path)
    cluster = _named(document.get("clusters") or [], context["cluster"], "cluster", path)
    user = _named(document.get("users") or [], context["user"], "user", path)
    base = path.parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    access = KubeconfigAccess(
        server=str(cluster["server"]).rstrip("/"),
        namespace=context.get("namespace") or "default",
        ca_pem=_data_or_file(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        cert_pem=_data_or_file(user, "client-certificate", base),
        key_pem=_data_or_file(user, "client-key", base),
        token=token or None,
    )
    if access.cert_pem is None and access.token is None:
        raise ValueError(
            f"{path}: user {context['user']!r} has no client certificate or token "
            "(exec and auth-provider credentials are not supported here)"
        )
    return access

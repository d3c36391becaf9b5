"""``ClusterHandle``: everything a test needs to *use* a cluster, and nothing to run one.

A handle is plain data (paths and a URL), so the pytest-xdist controller that started the
control plane can hand it to its workers as a dict, and each worker rebuilds an equivalent
handle that can mint kubeconfigs with the shared CA.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self, final

import attrs

from ._certs import CertificateAuthority
from ._crds import default_crd_dirs, install_crds, load_crds
from ._kubeconfig import read_kubeconfig, write_kubeconfig
from ._rest import RestClient

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = ["ClusterHandle", "PodFiles"]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"


@final
@attrs.frozen
class PodFiles:
    """A ServiceAccount directory as the kubelet projects it into a pod.

    Attributes:
        directory: holds ``token``, ``ca.crt`` and ``namespace`` (what
            ``/var/run/secrets/kubernetes.io/serviceaccount`` holds in a pod).
        host / port: what ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` say.
    """

    directory: Path
    host: str
    port: str

    def environment(self) -> dict[str, str]:
        """``KUBERNETES_SERVICE_HOST``/``_PORT`` as the kubelet sets them."""
        return {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": self.port}


@final
@attrs.frozen
class ClusterHandle:
    """Access to a running cluster: its admin kubeconfig and, when we own it, its CA.

    Attributes:
        kubeconfig_path: The admin kubeconfig (context ``konductor-local`` for a local
            control plane).
        server: The apiserver URL.
        pki_dir: Directory holding ``ca.crt``/``ca.key``, or None for a cluster this
            process did not create (then :meth:`mint_kubeconfig` is unavailable).
    """

    kubeconfig_path: Path
    server: str
    pki_dir: Path | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str]) -> Self:
        """Wrap an existing cluster (envtest's ``UseExistingCluster``).

        Args:
            path: Its kubeconfig; the current context is used.

        Returns:
            A handle without minting support.
        """
        kubeconfig = Path(path).resolve()
        return cls(kubeconfig_path=kubeconfig, server=read_kubeconfig(kubeconfig).server)

    def to_dict(self) -> dict[str, str]:
        """Serialise for ``workerinput`` (execnet only carries builtin types).

        Returns:
            A JSON-compatible dict accepted by :meth:`from_dict`.
        """
        data = {"kubeconfig_path": str(self.kubeconfig_path), "server": self.server}
        if self.pki_dir is not None:
            data["pki_dir"] = str(self.pki_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Self:
        """Inverse of :meth:`to_dict`.

        Args:
            data: The serialised handle.

        Returns:
            The handle.
        """
        pki = data.get("pki_dir")
        return cls(
            kubeconfig_path=Path(data["kubeconfig_path"]),
            server=data["server"],
            pki_dir=Path(pki) if pki else None,
        )

    @property
    def can_mint(self) -> bool:
        """Whether :meth:`mint_kubeconfig` works (we hold the cluster's client CA)."""
        return self.pki_dir is not None

    def mint_kubeconfig(
        self, user: str, groups: Sequence[str] = (), namespace: str = "default"
    ) -> Path:
        """Write a kubeconfig authenticating as ``user`` in ``groups`` via a client cert.

        The user has no permissions beyond what RBAC grants to ``groups`` (and to
        ``system:authenticated``), which makes it the tool for testing authorization:
        ``mint_kubeconfig("alice")`` is denied everywhere, ``mint_kubeconfig("root",
        ["system:masters"])`` is allowed everything.

        Args:
            user: The user name (certificate CN).
            groups: Group names (certificate O entries).
            namespace: The kubeconfig context's namespace.

        Returns:
            Path of a new kubeconfig file (removed with the control plane).

        Raises:
            NotImplementedError: The cluster was not started by us (``KONDUCTOR_TEST_KUBECONFIG``
                mode): its CA key is unknown.
        """
        if self.pki_dir is None:
            raise NotImplementedError(
                f"cannot mint client certificates for {self.server}: its CA key is unknown "
                "(an existing cluster); create a ServiceAccount token instead"
            )
        ca = CertificateAuthority.load(self.pki_dir / CA_CERT, self.pki_dir / CA_KEY)
        pair = ca.issue_client_cert(user, groups)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-")[:40] or "user"
        path = self.pki_dir.parent / "kubeconfigs" / f"{slug}-{secrets.token_hex(4)}.yaml"
        return write_kubeconfig(
            path,
            server=self.server,
            ca_pem=ca.cert_pem,
            user=user,
            cert_pem=pair.cert_pem,
            key_pem=pair.key_pem,
            namespace=namespace,
        )

    @contextlib.asynccontextmanager
    async def api_client(
        self, kubeconfig: str | os.PathLike[str] | None = None
    ) -> AsyncIterator[ApiClient]:
        """Open a ``kubernetes_asyncio`` client, closed on exit.

        Args:
            kubeconfig: Whose identity to use (e.g. a :meth:`mint_kubeconfig` result);
                the admin kubeconfig by default.

        Yields:
            The API client.
        """
        # Imported here: kubernetes_asyncio is heavy and only tests that talk async need it.
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(kubeconfig or self.kubeconfig_path),
            client_configuration=configuration,
        )
        async with client.ApiClient(configuration) as api:
            yield api

    def rest(self) -> RestClient:
        """Return a synchronous admin REST client (used for setup work outside event loops).

        Returns:
            A new client reading the admin kubeconfig.
        """
        return RestClient(self.kubeconfig_path)

    def install_crds(self, *dirs: str | os.PathLike[str], timeout: float = 60.0) -> list[str]:
        """Install the CRDs found in ``dirs`` and wait until they are served.

        This blocks; from async code call it through ``anyio.to_thread.run_sync``.

        Args:
            *dirs: Directories of CRD YAML files; the default CRD directories if omitted.
            timeout: Seconds to wait for the CRDs to be served.

        Returns:
            The installed CRD names.
        """
        chosen: Iterable[str | os.PathLike[str]] = dirs or default_crd_dirs()
        return install_crds(self.rest(), load_crds(chosen), timeout=timeout)

    def create_namespace(self, name: str) -> str:
        """Create a namespace (an existing one is fine). Blocks; see :meth:`install_crds`.

        Args:
            name: The namespace.

        Returns:
            ``name``.
        """
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        self.rest().expect("POST", "/api/v1/namespaces", body, ok=(409,))
        return name

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
        """Block until the API server's authorizer lets ``user`` ``verb`` ``resource``.

        RBAC objects reach the authorizer through a cache: a Role or RoleBinding is in
        force a moment *after* the write that created it was answered, so a test that binds
        a role and at once acts as the user can be refused. This asks the authorizer
        itself (a SubjectAccessReview, as ``kubectl auth can-i --as`` does) until it says
        yes. Blocks; from async code, ``await anyio.to_thread.run_sync(...)``.

        Args:
            user: The user name, as in :meth:`mint_kubeconfig`.
            verb: ``get``, ``create``, ``update``, a custom verb...
            resource: The resource's plural, with ``/subresource`` if any
                (``semaphores/status``).
            group: Its API group (``""`` for the core group).
            namespace: The namespace; None for a cluster-scoped check.
            groups: The user's groups, as in :meth:`mint_kubeconfig`.
            timeout: Seconds to wait.

        Raises:
            TimeoutError: Still refused after ``timeout``; the message names the request
                and the authorizer's last reason.
        """
        plural, _, subresource = resource.partition("/")
        attributes = {"group": group, "resource": plural, "verb": verb}
        if subresource:
            attributes["subresource"] = subresource
        if namespace is not None:
            attributes["namespace"] = namespace
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": list(groups), "resourceAttributes": attributes},
        }
        rest = self.rest()
        deadline = time.monotonic() + timeout
        while True:
            # There is no event to wait on: the authorizer's cache is not observable.
            answer = rest.expect(
                "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review
            )
            status = answer.get("status") or {}
            if status.get("allowed"):
                return
            if time.monotonic() >= deadline:
                where = f" in namespace {namespace}" if namespace is not None else ""
                raise TimeoutError(
                    f"{user} may still not {verb} {resource} ({group or 'core'} group){where} "
                    f"after {timeout:g} s: {status.get('reason') or 'no rule allows it'}"
                )
            time.sleep(0.05)

    def create_service_account(self, namespace: str, name: str) -> str:
        """Create a ServiceAccount (an existing one is fine). Blocks.

        Args:
            namespace: Its namespace.
            name: Its name.

        Returns:
            Its user name, ``system:serviceaccount:<namespace>:<name>``.
        """
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        self.rest().expect(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body, ok=(409,)
        )
        return f"system:serviceaccount:{namespace}:{name}"

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        expiration_seconds: int = 3600,
        pod: tuple[str, str] | None = None,
    ) -> str:
        """Mint a token for a ServiceAccount with the TokenRequest API, as the kubelet does.

        Args:
            namespace: The ServiceAccount's namespace.
            name: The ServiceAccount.
            expiration_seconds: Lifetime (the API server's minimum is 600).
            pod: ``(name, uid)`` of a Pod to bind the token to: like a projected token, it
                stops authenticating once that Pod is deleted.

        Returns:
            The bearer token (a JWT).
        """
        spec: dict[str, object] = {"expirationSeconds": expiration_seconds}
        if pod is not None:
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod[0],
                "uid": pod[1],
            }
        answer = self.rest().expect(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(answer["status"]["token"])

    def pod_files(self, directory: Path, namespace: str, token: str) -> PodFiles:
        """Write a pod's ServiceAccount directory (``token``, ``ca.crt``, ``namespace``).

        Args:
            directory: Where to write them (created).
            namespace: The pod's namespace.
            token: A token from :meth:`service_account_token`.

        Returns:
            The files and the in-cluster environment pointing at this cluster.
        """
        directory.mkdir(parents=True, exist_ok=True)
        ca = read_kubeconfig(self.kubeconfig_path).ca_pem
        if ca is None:
            raise ValueError(f"{self.kubeconfig_path} names no CA: cannot write ca.crt")
        (directory / "ca.crt").write_bytes(ca)
        (directory / "token").write_text(token)
        (directory / "namespace").write_text(namespace)
        (directory / "token").chmod(0o600)
        host, _, port = self.server.removeprefix("https://").rpartition(":")
        return PodFiles(directory=directory, host=host.strip("[]"), port=port)

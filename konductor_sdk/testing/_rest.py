"""A minimal synchronous JSON client for the apiserver, on the standard library only.

The control plane must talk to the apiserver from plain synchronous code (``pytest_configure``,
``with LocalControlPlane()``, the ``up`` command) where no event loop runs, to poll
``/readyz``, install CRDs and create namespaces. ``http.client`` does that in a few lines
without pulling the synchronous ``kubernetes`` package into the runtime dependencies.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any, final
from urllib.parse import urlsplit

from ._kubeconfig import KubeconfigAccess, read_kubeconfig

__all__ = ["RestClient", "RestError"]


class RestError(RuntimeError):
    """The apiserver answered with an unexpected HTTP status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> HTTP {status}: {message}")
        self.status = status
        self.body = body


def _ssl_context(access: KubeconfigAccess) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if access.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif access.ca_pem is not None:
        context.load_verify_locations(cadata=access.ca_pem.decode("ascii"))
    if access.cert_pem is not None and access.key_pem is not None:
        # load_cert_chain only reads files; the material is written to a private temporary
        # file that lives for the duration of this call.
        with tempfile.NamedTemporaryFile(suffix=".pem") as bundle:
            os.fchmod(bundle.fileno(), 0o600)
            bundle.write(access.cert_pem + b"\n" + access.key_pem)
            bundle.flush()
            context.load_cert_chain(bundle.name)
    return context


@final
class RestClient:
    """Issue JSON requests with the current context of a kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        """Read ``kubeconfig`` once; each request opens a fresh connection.

        Args:
            kubeconfig: A kubeconfig with static credentials (see ``read_kubeconfig``).
        """
        access = read_kubeconfig(kubeconfig)
        url = urlsplit(access.server)
        if url.scheme != "https" or url.hostname is None:
            raise ValueError(f"{kubeconfig}: server must be an https URL, got {access.server!r}")
        self.server = access.server
        self._host = url.hostname
        self._port = url.port or 443
        self._prefix = url.path.rstrip("/")
        self._context = _ssl_context(access)
        self._headers = {"Accept": "application/json"}
        if access.token is not None:
            self._headers["Authorization"] = f"Bearer {access.token}"

    def __repr__(self) -> str:
        return f"<RestClient {self.server}>"

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """Send one request and decode the answer.

        Args:
            method: HTTP method.
            path: Absolute API path, e.g. ``/api/v1/namespaces``.
            body: A JSON-serialisable request body, or None.
            timeout: Socket timeout in seconds.

        Returns:
            The HTTP status and the decoded JSON body (the raw text if it is not JSON).

        Raises:
            OSError: The connection failed (the server is not listening yet, or is gone).
        """
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPSConnection(
            self._host, self._port, timeout=timeout, context=self._context
        )
        try:
            connection.request(method, self._prefix + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw

    def expect(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = ()) -> Any:
        """Like :meth:`request`, but raise unless the status is 2xx or listed in ``ok``.

        Args:
            method: HTTP method.
            path: Absolute API path.
            body: JSON request body, or None.
            ok: Extra statuses to accept (e.g. ``(409,)`` for "already exists").

        Returns:
            The decoded body.

        Raises:
            RestError: Any other status.
        """
        status, answer = self.request(method, path, body)
        if not (200 <= status < 300 or status in ok):
            raise RestError(method, path, status, answer)
        return answer

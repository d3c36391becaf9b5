"""``--metrics-auth=kubernetes``: /metrics answers only bearer tokens that the real API
server authenticates (TokenReview) and authorizes for ``get /metrics`` (SubjectAccessReview,
the generated ClusterRole ``konductor-metrics-reader``); the probes stay open."""

from __future__ import annotations

import http.client
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _operator_support import OperatorProcess, start_operator, wait_until

from konductor_sdk.testing import ClusterHandle
from konductor_sdk.testing._certs import CertificateAuthority

ROOT = Path(__file__).resolve().parents[2]
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def get(
    op: OperatorProcess,
    path: str,
    token: str | None = None,
    *,
    ca: Path | None = None,
    scheme: str = "http",
) -> tuple[int, str, str]:
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{op.port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode(), ""
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), exc.headers.get("WWW-Authenticate", "")
    except (OSError, http.client.HTTPException):  # not listening (yet), or no HTTP answer
        return 0, "", ""


def reader_role() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "rbac" / "operator-role.yaml").read_text())
    (role,) = [d for d in docs if d and d["metadata"]["name"] == "konductor-metrics-reader"]
    return dict(role)


@pytest.fixture(params=[False, True], ids=["http", "https"])
def scraping(
    control_plane: ClusterHandle, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[OperatorProcess, str, str, Path | None]]:
    """An operator with --metrics-auth=kubernetes (over HTTP, or HTTPS with a certificate
    of a test CA), and tokens of two ServiceAccounts: one bound to (a renamed copy of)
    konductor-metrics-reader, one bound to nothing."""
    tls: tuple[str, ...] = ()
    ca_file = None
    if request.param:
        ca = CertificateAuthority.generate("metrics-test-ca")
        pair = ca.issue_serving_cert(dns_names=("localhost",), ip_addresses=("127.0.0.1",))
        pair.write(tmp_path / "tls.crt", tmp_path / "tls.key")
        ca_file = tmp_path / "ca.crt"
        ca_file.write_bytes(ca.cert_pem)
        tls = ("--metrics-tls-cert", str(tmp_path / "tls.crt"), "--metrics-tls-key",
               str(tmp_path / "tls.key"))  # fmt: skip
    scheme = "https" if request.param else "http"
    rest = control_plane.rest()
    suffix = secrets.token_hex(3)
    role = reader_role()
    role["metadata"]["name"] = f"konductor-metrics-reader-{suffix}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"scraper-{suffix}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": namespace}],
    }
    rest.expect("POST", f"{RBAC}/clusterroles", role)
    rest.expect("POST", f"{RBAC}/clusterrolebindings", binding)
    op = None
    try:
        control_plane.create_service_account(namespace, "scraper")
        control_plane.create_service_account(namespace, "stranger")
        scraper = control_plane.service_account_token(namespace, "scraper")
        stranger = control_plane.service_account_token(namespace, "stranger")
        op = start_operator(
            control_plane.kubeconfig_path,
            namespace,
            tmp_path,
            extra=("--metrics-auth", "kubernetes", "--no-leader-elect", *tls),
        )
        ready = lambda: get(op, "/readyz", ca=ca_file, scheme=scheme)[0] == 200  # noqa: E731
        wait_until(ready, timeout=60, what="/readyz", op=op)
        yield op, scraper, stranger, ca_file
    finally:
        if op is not None:
            op.stop()
        rest.request("DELETE", f"{RBAC}/clusterrolebindings/scraper-{suffix}")
        rest.request("DELETE", f"{RBAC}/clusterroles/{role['metadata']['name']}")


def test_metrics_need_a_token_allowed_to_get_metrics(
    scraping: tuple[OperatorProcess, str, str, Path | None],
) -> None:
    op, scraper, stranger, ca = scraping
    scheme = "https" if ca is not None else "http"

    def fetch(path: str, token: str | None = None) -> tuple[int, str, str]:
        return get(op, path, token, ca=ca, scheme=scheme)

    status, body, challenge = fetch("/metrics")
    assert (status, challenge) == (401, 'Bearer realm="konductor"'), body
    assert "konductor_operator" not in body
    status, body, _ = fetch("/metrics", "not-a-token")
    assert status == 401, body
    status, body, _ = fetch("/metrics", stranger)
    assert status == 403, body
    assert "may not get /metrics" in body
    assert "konductor_operator" not in body
    status, body, _ = fetch("/metrics", scraper)
    assert status == 200, body
    assert "konductor_operator_leader" in body
    # The kubelet's probes carry no token and must keep working.
    assert fetch("/healthz")[0] == 200
    assert fetch("/readyz")[0] == 200
    if ca is not None:
        # With TLS there is no plain-HTTP answer at all: a token is never sent in clear.
        assert get(op, "/metrics", scraper, scheme="http")[0] == 0

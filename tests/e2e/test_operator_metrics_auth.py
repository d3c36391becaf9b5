"""``--metrics-auth=kubernetes``: /metrics answers only bearer tokens that the real API
server authenticates (TokenReview) and authorizes for ``get /metrics`` (SubjectAccessReview,
the generated ClusterRole ``konductor-metrics-reader``); the probes stay open."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _operator_support import OperatorProcess, start_operator, wait_until

from konductor_sdk.testing import ClusterHandle

ROOT = Path(__file__).resolve().parents[2]
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def get(op: OperatorProcess, path: str, token: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(op.base + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode(), ""
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), exc.headers.get("WWW-Authenticate", "")
    except OSError:  # not listening yet
        return 0, "", ""


def reader_role() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "rbac" / "operator-role.yaml").read_text())
    (role,) = [d for d in docs if d and d["metadata"]["name"] == "konductor-metrics-reader"]
    return dict(role)


@pytest.fixture
def scraping(
    control_plane: ClusterHandle, namespace: str, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, str, str]]:
    """An operator with --metrics-auth=kubernetes, and tokens of two ServiceAccounts: one
    bound to (a renamed copy of) konductor-metrics-reader, one bound to nothing."""
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
            extra=("--metrics-auth", "kubernetes", "--no-leader-elect"),
        )
        wait_until(lambda: get(op, "/readyz")[0] == 200, timeout=60, what="/readyz", op=op)
        yield op, scraper, stranger
    finally:
        if op is not None:
            op.stop()
        rest.request("DELETE", f"{RBAC}/clusterrolebindings/scraper-{suffix}")
        rest.request("DELETE", f"{RBAC}/clusterroles/{role['metadata']['name']}")


def test_metrics_need_a_token_allowed_to_get_metrics(
    scraping: tuple[OperatorProcess, str, str],
) -> None:
    op, scraper, stranger = scraping
    status, body, challenge = get(op, "/metrics")
    assert (status, challenge) == (401, 'Bearer realm="konductor"'), body
    assert "konductor_operator" not in body
    status, body, _ = get(op, "/metrics", "not-a-token")
    assert status == 401, body
    status, body, _ = get(op, "/metrics", stranger)
    assert status == 403, body
    assert "may not get /metrics" in body
    assert "konductor_operator" not in body
    status, body, _ = get(op, "/metrics", scraper)
    assert status == 200, body
    assert "konductor_operator_leader" in body
    # The kubelet's probes carry no token and must keep working.
    assert get(op, "/healthz")[0] == 200
    assert get(op, "/readyz")[0] == 200

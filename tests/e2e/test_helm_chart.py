"""The Helm chart with a real ``helm`` (built from its Go module, cached like
kube-apiserver): ``helm lint``, ``helm template`` with the default and with non-default
values, every rendered manifest server-side dry-run (``dryRun=All``) on the local control
plane, and the chart's generated parts identical to deploy/'s."""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from konductor_operator.__main__ import main as operator_main
from konductor_operator._config import OperatorConfig
from konductor_sdk.testing import ClusterHandle
from konductor_sdk.testing._binaries import ensure_helm
from konductor_sdk.testing._rest import RestClient

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "konductor"

CUSTOM = {
    "replicaCount": 3,
    "image": {"digest": "sha256:" + "ab" * 32},
    "leaderElection": {"leaseName": "konductor-ha", "leaseDuration": 20},
    "watchNamespaces": ["team-a", "team-b"],
    "metrics": {
        "port": 9090,
        "auth": "kubernetes",
        "readers": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}],
        "tls": {"secretName": "konductor-metrics-tls"},
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "prom"},
            "tlsConfig": {"serverName": "konductor-operator-metrics.ops.svc"},
        },
    },
    "httpProbes": {
        "enabled": True,
        "allow": ["https://status.example.com/ready", "http://10.0.0.5:8080/healthz"],
    },
    "networkPolicy": {
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "apiServer": {"ports": [6443], "cidrs": ["10.0.0.1/32"]},
    },
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


def run_helm(helm: Path, *args: str) -> str:
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, env={"HOME": "/tmp"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def render(helm: Path, namespace: str, values: dict[str, Any] | None, tmp: Path) -> list[Any]:
    args = ["template", "konductor", str(CHART), "--namespace", namespace, "--include-crds"]
    if values is not None:
        path = tmp / f"values-{secrets.token_hex(2)}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return [d for d in yaml.safe_load_all(run_helm(helm, *args)) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_flags(docs: list[dict[str, Any]]) -> OperatorConfig:
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ctx = operator_main.make_context("konductor-operator", list(container["args"]))
    return OperatorConfig(**ctx.params)


def test_lint(helm: Path, tmp_path: Path) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    values = tmp_path / "custom.yaml"
    values.write_text(yaml.safe_dump(CUSTOM))
    assert "0 chart(s) failed" in run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"metrics": {"auth": "basic"}}, "/metrics/auth"),
        ({"httpProbes": {"allow": ["10.0.0.5"]}}, "/httpProbes/allow/0"),
        ({"replicas": 3}, "'replicas'"),  # a typo of replicaCount
        ({"image": {"digest": "latest"}}, "/image/digest"),
    ],
)
def test_bad_values_are_refused(
    helm: Path, tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [str(helm), "template", "x", str(CHART), "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"HOME": "/tmp"},
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_default_values(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, "konductor-system", None, tmp_path)
    kinds = {d["kind"] for d in docs}
    assert {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    } <= kinds
    assert "ServiceMonitor" not in kinds
    config = operator_flags(docs)
    assert (config.metrics_host, config.metrics_port, config.metrics_auth) == (
        "0.0.0.0",
        8080,
        "kubernetes",
    )
    assert config.leader_elect
    assert not config.enable_http_probes
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert image == f"ghcr.io/konductor/konductor-operator:{chart['appVersion']}"
    crds = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert crds == {
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in (ROOT / "crds").glob("*.yaml")
    }


def test_non_default_values(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, "ops", CUSTOM, tmp_path)
    config = operator_flags(docs)
    assert config.metrics_port == 9090
    assert config.lease_name == "konductor-ha"
    assert config.lease_duration == 20
    assert config.namespaces == ("team-a", "team-b")
    assert config.enable_http_probes
    assert config.http_probe_allow == tuple(CUSTOM["httpProbes"]["allow"])  # type: ignore[index]
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("@sha256:" + "ab" * 32)
    assert container["ports"][0]["containerPort"] == 9090
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["bearerTokenFile"].endswith("serviceaccount/token")
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"serverName": "konductor-operator-metrics.ops.svc"}
    # TLS: the Secret is mounted, the operator serves HTTPS, the kubelet probes HTTPS.
    assert (config.metrics_tls_cert, config.metrics_tls_key) == (
        "/etc/konductor/metrics-tls/tls.crt",
        "/etc/konductor/metrics-tls/tls.key",
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "metrics-tls", "secret": {"secretName": "konductor-metrics-tls"}}
    ]
    assert container["volumeMounts"][0]["mountPath"] == "/etc/konductor/metrics-tls"
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (readers,) = [
        d for d in by_kind(docs, "ClusterRoleBinding") if "metrics" in d["metadata"]["name"]
    ]
    assert readers["subjects"] == CUSTOM["metrics"]["readers"]  # type: ignore[index]
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == CUSTOM["networkPolicy"]["metricsFrom"]  # type: ignore[index]
    assert policy["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    # Everything optional can be switched off.
    off = render(
        helm,
        "ops",
        {
            "rbac": {"create": False, "userRoles": False},
            "admissionPolicies": {"enabled": False},
            "networkPolicy": {"enabled": False},
            "serviceAccount": {"create": False, "name": "existing"},
            "replicaCount": 1,
            "leaderElection": {"enabled": False},
        },
        tmp_path,
    )
    assert {d["kind"] for d in off} == {"CustomResourceDefinition", "Deployment", "Service"}
    assert not operator_flags(off).leader_elect


def test_generated_parts_equal_deploy(helm: Path, tmp_path: Path) -> None:
    """RBAC and policies from the chart are deploy/'s (same source), up to labels."""

    def comparable(docs: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        out = {}
        for doc in docs:
            if doc["kind"] in (
                "ClusterRole",
                "Role",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "CustomResourceDefinition",
            ):
                body = {k: v for k, v in doc.items() if k != "metadata"}
                out[(doc["kind"], doc["metadata"]["name"])] = body
        return out

    # deploy/'s files as written (kustomize's own re-serialization reflows folded `>`
    # scalars, a whitespace change that is not the generator's doing).
    files = [
        *(ROOT / "deploy" / "crds").glob("*.yaml"),
        *(ROOT / "deploy" / "policies").glob("*.yaml"),
        *(ROOT / "deploy" / "rbac").glob("*.yaml"),
    ]
    deploy = comparable(
        [d for path in files for d in yaml.safe_load_all(path.read_text()) if d and "kind" in d]
    )
    chart = comparable(render(helm, "konductor-system", None, tmp_path))
    assert chart == deploy


# -- server-side dry run -----------------------------------------------------------------------


class Resources:
    """kind -> (collection path, namespaced), from the API server's discovery."""

    def __init__(self, rest: RestClient) -> None:
        self.rest = rest
        self.cache: dict[str, dict[str, tuple[str, bool]]] = {}

    def path(self, api_version: str, kind: str, namespace: str) -> str:
        if api_version not in self.cache:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            listing = self.rest.expect("GET", prefix)
            self.cache[api_version] = {
                r["kind"]: (f"{prefix}/{r['name']}", bool(r["namespaced"]))
                for r in listing["resources"]
                if "/" not in r["name"]
            }
        served = self.cache[api_version]
        assert kind in served, f"{api_version} {kind} is not served by the API server"
        base, namespaced = served[kind]
        if namespaced:
            prefix, plural = base.rsplit("/", 1)
            return f"{prefix}/namespaces/{namespace}/{plural}"
        return base


def dry_run(rest: RestClient, resources: Resources, doc: dict[str, Any], ns: str) -> str | None:
    base = resources.path(doc["apiVersion"], doc["kind"], ns)
    status, answer = rest.request("POST", f"{base}?dryRun=All", doc)
    if status == 409:  # exists (a CRD, a shared policy): a dry-run replace instead
        name = doc["metadata"]["name"]
        current = rest.expect("GET", f"{base}/{name}")
        body = copy.deepcopy(doc)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        status, answer = rest.request("PUT", f"{base}/{name}?dryRun=All", body)
    if 200 <= status < 300:
        return None
    return f"{doc['kind']}/{doc['metadata']['name']}: {status} {json.dumps(answer)[:500]}"


SERVICE_MONITOR_CRD = {
    # A stand-in for the Prometheus Operator's CRD (not available offline): it makes the
    # API server serve monitoring.coreos.com/v1 ServiceMonitor, without its schema.
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "listKind": "ServiceMonitorList",
            "singular": "servicemonitor",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def service_monitors(
    control_plane: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("servicemonitor-crd")
    (directory / "servicemonitor.yaml").write_text(yaml.safe_dump(SERVICE_MONITOR_CRD))
    control_plane.install_crds(directory)


@pytest.mark.parametrize("values", [None, CUSTOM], ids=["default", "custom"])
def test_rendered_chart_passes_a_server_side_dry_run(
    helm: Path,
    control_plane: ClusterHandle,
    namespace: str,
    service_monitors: None,
    tmp_path: Path,
    values: dict[str, Any] | None,
) -> None:
    docs = render(helm, namespace, values, tmp_path)
    rest = control_plane.rest()
    resources = Resources(rest)
    failures = [f for d in docs if (f := dry_run(rest, resources, d, namespace)) is not None]
    assert not failures, "\n".join(failures)
    # Nothing was persisted.
    status, _ = rest.request(
        "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/konductor-operator"
    )
    assert status == 404

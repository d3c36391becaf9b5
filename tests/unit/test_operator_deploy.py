"""deploy/ and the Dockerfile agree with the code: kinds, CRDs, flags, least privilege.

The manifests are applied to a real API server in tests/e2e/test_operator_manifests.py.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from konductor_operator.__main__ import main
from konductor_operator._config import OperatorConfig
from konductor_sdk._kernel.objects import GROUP
from konductor_sdk._machines.rules import registered

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rules_of(name: str) -> list[dict[str, Any]]:
    for doc in load(DEPLOY / "rbac" / "operator-role.yaml") + load(
        DEPLOY / "rbac" / "user-roles.yaml"
    ):
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == name:
            return list(doc["rules"])
    raise AssertionError(f"no ClusterRole {name}")


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", ())
        and resource in r.get("resources", ())
        and verb in r.get("verbs", ())
        for r in rules
    )


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_existing_files_and_every_crd() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).exists(), resource
    crds = yaml.safe_load((DEPLOY / "crds" / "kustomization.yaml").read_text())["resources"]
    assert sorted(crds) == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))


def test_operator_role_covers_every_registered_kind_and_nothing_destructive() -> None:
    rules = rules_of("konductor-operator")
    for kind in registered().values():
        plural = kind.kind.plural
        for verb in ("get", "list", "watch"):
            assert allowed(rules, GROUP, plural, verb), (plural, verb)
        assert allowed(rules, GROUP, f"{plural}/status", "update"), plural
        # The operator repairs state; it never deletes primitives or rewrites their spec.
        for verb in ("delete", "update", "patch", "deletecollection"):
            assert not allowed(rules, GROUP, plural, verb), (plural, verb)
        # Reaping anyone's entries past the ownership policies (policies/).
        assert allowed(rules, GROUP, plural, "override"), plural
    # Sessions' and claims' liveness: it deletes those of dead clients; it never replaces
    # anyone's (its own, for its election, it creates in its own namespace: a Role).
    for plural in ("sessions", "claims"):
        for verb in ("get", "list", "watch", "delete", "deletecollection"):
            assert allowed(rules, GROUP, plural, verb), (plural, verb)
        for verb in ("update", "create", "patch"):
            assert not allowed(rules, GROUP, plural, verb), (plural, verb)
    assert allowed(rules, "", "pods", "watch")
    assert not allowed(rules, "", "pods", "delete")
    assert allowed(rules, "", "events", "create")
    assert allowed(rules, "", "events", "patch")
    assert not any("*" in r.get("verbs", ()) or "*" in r.get("resources", ()) for r in rules)
    assert not any("secrets" in r.get("resources", ()) for r in rules)


def test_user_and_viewer_roles() -> None:
    user, viewer = rules_of("konductor-user"), rules_of("konductor-viewer")
    for kind in registered().values():
        plural = kind.kind.plural
        for verb in ("get", "list", "watch", "create", "delete"):
            assert allowed(user, GROUP, plural, verb), (plural, verb)
        for verb in ("update", "patch"):
            assert allowed(user, GROUP, f"{plural}/status", verb), (plural, verb)
        assert allowed(viewer, GROUP, plural, "watch")
        for verb in ("create", "delete", "update", "patch"):
            assert not allowed(viewer, GROUP, plural, verb)
            assert not allowed(viewer, GROUP, f"{plural}/status", verb)


def test_deployment_runs_two_replicas_with_flags_the_cli_accepts() -> None:
    [deployment] = load(DEPLOY / "deployment.yaml")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "konductor-operator"
    [container] = pod["containers"]
    ctx = main.make_context("konductor-operator", list(container["args"]))
    config = OperatorConfig(**ctx.params)
    assert config.metrics_port == container["ports"][0]["containerPort"]
    assert config.leader_elect
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"] for e in container["env"]}
    assert {"POD_NAME", "POD_NAMESPACE", "POD_UID"} <= env


def test_dockerfile_builds_the_package_and_runs_the_operator() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert 'ENTRYPOINT ["konductor-operator"]' in text
    assert "USER 65532" in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["konductor-operator"] == "konductor_operator.__main__:entry_point"

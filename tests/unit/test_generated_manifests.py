"""deploy/, the Helm chart's generated files and examples/k8s/rbac.yaml come from crds/ +
policies/ + the version, through deploy/generate.py: nothing is kept by hand twice.

* the generated files in the repository are current (``--check``), and ``--check`` fails
  on an edited or extra generated file;
* a new CRD or policy file is picked up without touching the generator, and every role
  follows the set of kinds;
* the roles say what docs/operator.md says they do.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GENERATE = ROOT / "deploy" / "generate.py"
GROUP = "sync.konductor.io"


def generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATE), "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def role(path: Path, kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in load(path) if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def allowed(doc: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", ())
        and resource in r.get("resources", ())
        and verb in r.get("verbs", ())
        for r in doc["rules"]
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the generator reads and writes."""
    for directory in ("crds", "policies", "deploy", "charts", "examples"):
        shutil.copytree(ROOT / directory, tmp_path / directory, symlinks=True)
    (tmp_path / "konductor_sdk").mkdir()
    shutil.copy(ROOT / "konductor_sdk" / "__init__.py", tmp_path / "konductor_sdk")
    return tmp_path


def test_the_repository_is_current() -> None:
    result = generate(ROOT, "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_on_an_edited_or_extra_generated_file(tree: Path) -> None:
    assert generate(tree, "--check").returncode == 0
    edited = tree / "charts" / "konductor" / "templates" / "generated" / "rbac-users.yaml"
    edited.write_text(edited.read_text().replace("- watch", "- watch\n  - escalate", 1))
    (tree / "deploy" / "policies" / "old-policy.yaml").write_text("{}\n")
    result = generate(tree, "--check")
    assert result.returncode == 1
    assert "stale: charts/konductor/templates/generated/rbac-users.yaml" in result.stdout
    assert "stale: deploy/policies/old-policy.yaml" in result.stdout
    assert generate(tree).returncode == 0
    assert generate(tree, "--check").returncode == 0
    assert not (tree / "deploy" / "policies" / "old-policy.yaml").exists()


def crd(kind: str, plural: str, *, status: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                    **({"subresources": {"status": {}}} if status else {}),
                }
            ],
        },
    }


def test_new_kinds_and_policies_are_picked_up(tree: Path) -> None:
    # A primitive (with /status) and a record written in its spec (without).
    (tree / "crds" / "session.yaml").write_text(yaml.safe_dump(crd("Session", "sessions")))
    (tree / "crds" / "claim.yaml").write_text(yaml.safe_dump(crd("Claim", "claims", status=False)))
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": "konductor-stamp"},
        "spec": {"failurePolicy": "Fail", "mutations": []},
    }
    # A CEL expression with {{ }} must reach the chart as text, not as a template action.
    mutating["spec"]["mutations"] = [
        {
            "patchType": "ApplyConfiguration",
            "applyConfiguration": {
                "expression": "Object{metadata: Object.metadata{labels: {'x': '{{y}}'}}}"
            },
        }
    ]
    (tree / "policies" / "stamp.yaml").write_text(yaml.safe_dump(mutating))
    assert generate(tree, "--check").returncode == 1  # the new sources make everything stale
    assert generate(tree).returncode == 0

    deploy = tree / "deploy"
    assert (deploy / "crds" / "session.yaml").exists()
    assert "session.yaml" in load(deploy / "crds" / "kustomization.yaml")[0]["resources"]
    assert load(deploy / "policies" / "kustomization.yaml")[0]["resources"] == sorted(
        p.name for p in (tree / "policies").glob("*.yaml")
    )
    assert "stamp.yaml" in load(deploy / "policies" / "kustomization.yaml")[0]["resources"]
    assert (tree / "charts" / "konductor" / "crds" / "claim.yaml").exists()
    template = tree / "charts" / "konductor" / "templates" / "generated" / "policy-stamp.yaml"
    assert '\'{{ "{{" }}y{{ "}}" }}\'' in template.read_text()
    users = deploy / "rbac" / "user-roles.yaml"
    operator = deploy / "rbac" / "operator-role.yaml"
    operator_role = role(operator, "ClusterRole", "konductor-operator")
    for resource in ("sessions", "sessions/status", "claims"):
        assert allowed(role(users, "ClusterRole", "konductor-user"), GROUP, resource, "patch")
        assert allowed(role(users, "ClusterRole", "konductor-viewer"), GROUP, resource, "get")
        assert allowed(role(users, "ClusterRole", "konductor-admin"), GROUP, resource, "override")
        assert allowed(operator_role, GROUP, resource, "override")
    # No /status where the kind has none.
    assert not allowed(role(users, "ClusterRole", "konductor-user"), GROUP, "claims/status", "get")
    assert not allowed(operator_role, GROUP, "claims/status", "update")
    # The operator writes a primitive's status only, and deletes records of ended owners.
    assert allowed(operator_role, GROUP, "sessions/status", "update")
    for verb in ("delete", "deletecollection", "update", "patch"):
        assert not allowed(operator_role, GROUP, "sessions", verb), verb
    for verb in ("get", "list", "watch", "delete", "deletecollection"):
        assert allowed(operator_role, GROUP, "claims", verb), verb
    for verb in ("create", "update", "patch"):
        assert not allowed(operator_role, GROUP, "claims", verb), verb
    examples = load(tree / "examples" / "k8s" / "rbac.yaml")
    assert [d["kind"] for d in examples] == ["ServiceAccount", "RoleBinding"]


def kinds_of_repository() -> dict[str, bool]:
    """plural -> whether the kind has a /status subresource."""
    return {
        d["spec"]["names"]["plural"]: any(
            "status" in (v.get("subresources") or {}) for v in d["spec"]["versions"]
        )
        for p in (ROOT / "crds").glob("*.yaml")
        for d in load(p)
        if d["spec"]["group"] == GROUP
    }


def test_user_viewer_and_admin_roles() -> None:
    users = ROOT / "deploy" / "rbac" / "user-roles.yaml"
    user = role(users, "ClusterRole", "konductor-user")
    viewer = role(users, "ClusterRole", "konductor-viewer")
    admin = role(users, "ClusterRole", "konductor-admin")
    for plural, has_status in kinds_of_repository().items():
        for resource in (plural, f"{plural}/status") if has_status else (plural,):
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
                assert allowed(user, GROUP, resource, verb), (resource, verb)
                assert allowed(admin, GROUP, resource, verb), (resource, verb)
                assert allowed(viewer, GROUP, resource, verb) is (verb in ("get", "list", "watch"))
            assert allowed(admin, GROUP, resource, "override")
            assert not allowed(user, GROUP, resource, "override")
    for who in (user, viewer, admin):
        for verb in ("get", "list", "watch"):
            assert allowed(who, "", "events", verb)  # the operator's Events (issue 14)
        assert not allowed(who, "", "events", "create")
    labels = admin["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"


def test_operator_leases_only_in_its_namespace() -> None:
    docs = load(ROOT / "deploy" / "rbac" / "operator-role.yaml")
    cluster = role(
        ROOT / "deploy" / "rbac" / "operator-role.yaml", "ClusterRole", "konductor-operator"
    )
    for group in (GROUP, "coordination.k8s.io"):
        for verb in ("create", "update", "delete"):
            assert not allowed(cluster, group, "leases", verb), (group, verb)
    (election,) = [d for d in docs if d["kind"] == "Role"]
    assert allowed(election, GROUP, "leases", "create")
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": election["metadata"]["name"],
    }
    assert allowed(cluster, "authentication.k8s.io", "tokenreviews", "create")


def test_one_version_everywhere() -> None:
    import konductor_sdk

    chart = yaml.safe_load((ROOT / "charts" / "konductor" / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == konductor_sdk.__version__
    kustomization = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    assert kustomization["images"][0]["newTag"] == konductor_sdk.__version__
    values = yaml.safe_load((ROOT / "charts" / "konductor" / "values.yaml").read_text())
    assert values["image"]["tag"] == ""  # the chart's appVersion


def test_examples_bind_the_generated_user_role() -> None:
    sa, binding = load(ROOT / "examples" / "k8s" / "rbac.yaml")
    assert binding["roleRef"]["name"] == "konductor-user"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"]}]

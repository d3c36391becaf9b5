"""The pytest plugin's decisions: namespace names, and when the controller starts a cluster."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import konductor_sdk.testing as testing
from konductor_sdk.testing import pytest_plugin
from konductor_sdk.testing.pytest_plugin import (
    _marker_expression_allows,
    _may_hold_cluster_tests,
    _namespace_name,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_public_names_are_exactly_all() -> None:
    # (pytest may rewrite the package, adding "@py_builtins" and the like: not names.)
    public = {n for n in vars(testing) if n.isidentifier() and not n.startswith("_")}
    assert sorted(testing.__all__) == testing.__all__
    assert public - {"pytest_plugin"} == set(testing.__all__)


@pytest.mark.parametrize(
    "test_name",
    ["test_simple", "test_param[alpha-Beta_3]", "test_" + "x" * 200, "[]", "TEST__Ünïcode"],
)
def test_namespace_names_are_valid_unique_dns_labels(test_name: str) -> None:
    names = {_namespace_name(test_name) for _ in range(20)}
    assert len(names) == 20
    for name in names:
        assert len(name) <= 63
        assert DNS_LABEL.match(name), name


def test_cluster_tests_are_found_by_directory(tmp_path: Path) -> None:
    root = tmp_path / "integration" / "project"  # an ancestor's name does not count
    (root / "tests" / "unit").mkdir(parents=True)
    (root / "tests" / ".venv" / "integration").mkdir(parents=True)
    assert not _may_hold_cluster_tests(root / "tests", root)  # hidden dirs are not searched
    assert not _may_hold_cluster_tests(root / "tests" / "unit" / "test_x.py", root)
    (root / "tests" / "e2e").mkdir()
    assert _may_hold_cluster_tests(root, root)
    assert _may_hold_cluster_tests(root / "tests" / "integration" / "test_y.py", root)


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("", True),
        ("integration", True),
        ("e2e or slow", True),
        ("not integration", True),  # e2e tests may still need the cluster
        ("not integration and not e2e", False),
        ("slow", False),
    ],
)
def test_marker_expression_decides(expression: str, allowed: bool) -> None:
    config: Any = SimpleNamespace(option=SimpleNamespace(markexpr=expression))
    assert _marker_expression_allows(config) is allowed


def test_existing_cluster_variable_name() -> None:
    assert pytest_plugin.EXISTING_CLUSTER_ENV == "KONDUCTOR_TEST_KUBECONFIG"

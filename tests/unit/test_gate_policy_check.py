"""The operator trusts ``spec.creator`` only while the live Gate creator policy enforces
exactly the shipped expression over every gate: existence alone is not enough."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from konductor_operator._gate_refs import (
    BINDING,
    POLICY,
    POLICY_FILE,
    POLICY_NAME,
    VAP,
    VAP_BINDING,
    AccessGuard,
    policy_problem,
)
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.objects import KObject, ResourceKind

pytestmark = pytest.mark.anyio


def test_the_policy_comes_from_the_policies_directory() -> None:
    assert POLICY_FILE.parent.name == "policies"
    assert POLICY["metadata"]["name"] == POLICY_NAME
    assert BINDING["spec"]["policyName"] == POLICY_NAME
    assert policy_problem(POLICY, BINDING) is None


def defaulted() -> tuple[dict[str, Any], dict[str, Any]]:
    """What the API server returns: the same policy with its defaults filled in."""
    policy, binding = copy.deepcopy(POLICY), copy.deepcopy(BINDING)
    match = policy["spec"]["matchConstraints"]
    match.update(matchPolicy="Equivalent", namespaceSelector={}, objectSelector={})
    for rule in match["resourceRules"]:
        rule["scope"] = "*"
    return policy, binding


def mutated(path: str, value: Any, *, binding: bool = False) -> str | None:
    policy, bind = defaulted()
    target = bind if binding else policy
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
    if value is None:
        del target[last]
    else:
        target[last] = value
    return policy_problem(policy, bind)


def test_defaults_of_the_api_server_are_accepted() -> None:
    assert policy_problem(*defaulted()) is None
    # A wildcard rule covers the expected one, and an extra validation only adds denials.
    assert mutated("spec.matchConstraints.resourceRules.0.resources", ["*"]) is None
    assert mutated("spec.matchConstraints.resourceRules.0.operations", ["*"]) is None
    policy, binding = defaulted()
    policy["spec"]["validations"].append({"expression": "true"})
    assert policy_problem(policy, binding) is None


@pytest.mark.parametrize(
    ("path", "value", "on_binding", "why"),
    [
        ("spec.validations.0.expression", "true", False, "expected validation expression"),
        ("spec.validations", [], False, "expected validation expression"),
        ("spec.failurePolicy", "Ignore", False, "failurePolicy Ignore"),
        (
            "spec.matchConditions",
            [{"name": "not-me", "expression": "request.userInfo.username != 'eve'"}],
            False,
            "narrowed",
        ),
        ("spec.paramKind", {"apiVersion": "v1", "kind": "ConfigMap"}, False, "narrowed"),
        (
            "spec.matchConstraints.namespaceSelector",
            {"matchLabels": {"strict": "yes"}},
            False,
            "excludes some gates",
        ),
        (
            "spec.matchConstraints.objectSelector",
            {"matchExpressions": [{"key": "x", "operator": "Exists"}]},
            False,
            "excludes some gates",
        ),
        (
            "spec.matchConstraints.excludeResourceRules",
            [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}],
            False,
            "excludes some gates",
        ),
        ("spec.matchConstraints.resourceRules.0.operations", ["CREATE"], False, "every CREATE"),
        ("spec.matchConstraints.resourceRules.0.resources", ["barriers"], False, "every CREATE"),
        ("spec.matchConstraints.resourceRules.0.apiGroups", ["other.io"], False, "every CREATE"),
        ("spec.matchConstraints.resourceRules.0.scope", "Cluster", False, "every CREATE"),
        ("spec.matchConstraints.resourceRules.0.resourceNames", ["one"], False, "every CREATE"),
        ("spec.validationActions", ["Audit"], True, "does not deny"),
        ("spec.policyName", "other", True, "does not deny"),
        ("spec.paramRef", {"name": "p"}, True, "parameters"),
        (
            "spec.matchResources",
            {"namespaceSelector": {"matchLabels": {"team": "a"}}},
            True,
            "some namespaces",
        ),
        (
            "spec.matchResources",
            {
                "resourceRules": [
                    {
                        "apiGroups": ["sync.konductor.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE"],
                        "resources": ["gates"],
                    }
                ]
            },
            True,
            "every CREATE",
        ),
    ],
)
def test_weakened_policies_are_not_trusted(
    path: str, value: Any, on_binding: bool, why: str
) -> None:
    problem = mutated(path, value, binding=on_binding)
    assert problem is not None
    assert why in problem


class PolicyStore:
    """A store holding given policy and binding objects (as the API server returns them)."""

    def __init__(self, policy: dict[str, Any], binding: dict[str, Any]) -> None:
        self.objects = {VAP.plural: policy, VAP_BINDING.plural: binding}

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        if kind.plural not in self.objects:
            raise NotFoundError("nope", status=404)
        return KObject(self.objects[kind.plural])


async def test_an_existing_but_weakened_policy_is_not_in_force() -> None:
    policy, binding = defaulted()
    guard = AccessGuard(PolicyStore(policy, binding), FakeClock())  # type: ignore[arg-type]
    assert await guard.ensure_policy(install=False)
    assert guard.policy_active
    policy["spec"]["validations"][0]["expression"] = "true"  # anyone may claim anyone
    assert not await guard.ensure_policy(install=False)
    assert not guard.policy_active
    assert "expected validation expression" in guard.policy_error
    # A gate's recorded creator is no longer trusted.
    gate = KObject(
        {"metadata": {"name": "g", "namespace": "a"}, "spec": {"creator": {"username": "x"}}}
    )
    assert guard.creator(gate) is None

"""ElectionConfig is validated on construction, with client-go's rules and our bounds."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk import ConfigurationError
from konductor_sdk.election import ElectionConfig, LeaderElector

GOOD: dict[str, Any] = {"lease_duration": 15, "renew_deadline": 10, "retry_period": 2}


def test_defaults_are_client_gos() -> None:
    config = ElectionConfig("scheduler")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10.0, 2.0)
    assert config.backend == "konductor"
    assert config.release_on_cancel is True
    assert config.identity is None


def test_integral_float_lease_duration_is_accepted_as_whole_seconds() -> None:
    config = ElectionConfig("x", lease_duration=4.0, renew_deadline=3, retry_period=1)  # type: ignore[arg-type]
    assert config.lease_duration == 4
    assert isinstance(config.lease_duration, int)


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"lease_duration": 10}, "lease_duration", "must be > renew_deadline (10)"),
        ({"lease_duration": 9}, "lease_duration", "> renew_deadline"),
        ({"lease_duration": 0}, "lease_duration", "whole seconds in [1, 86400], got 0"),
        ({"lease_duration": 15.5}, "lease_duration", "whole seconds"),
        ({"lease_duration": "15"}, "lease_duration", "whole seconds"),
        ({"lease_duration": True}, "lease_duration", "whole seconds"),
        ({"renew_deadline": 2.4}, "renew_deadline", "> 1.2 * retry_period (2.4)"),
        ({"renew_deadline": 1}, "renew_deadline", "> 1.2 * retry_period"),
        ({"renew_deadline": 0}, "renew_deadline", "must be > 0"),
        ({"renew_deadline": float("nan")}, "renew_deadline", "finite"),
        ({"retry_period": 0}, "retry_period", "must be > 0"),
        ({"retry_period": -1}, "retry_period", "must be > 0"),
        ({"retry_period": float("inf")}, "retry_period", "finite"),
        ({"retry_period": None}, "retry_period", "finite number"),
        ({"identity": ""}, "identity", "non-empty"),
        ({"identity": "   "}, "identity", "non-empty"),
        ({"identity": "x" * 513}, "identity", "at most 512"),
        ({"priority": -1_000_001}, "priority", "in [-1000000, 1000000]"),
        ({"priority": 1_000_001}, "priority", "in [-1000000, 1000000]"),
        ({"priority": 1.5}, "priority", "whole number"),
        ({"priority": True}, "priority", "whole number"),
        ({"backend": "etcd"}, "backend", "one of"),
        ({"backend": "coordination", "priority": 3}, "priority", "backend 'coordination'"),
        ({"namespace": "Bad_NS"}, "namespace", "DNS subdomain"),
        ({"release_on_cancel": "yes"}, "release_on_cancel", "a bool"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(
    changes: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ElectionConfig("scheduler", **{**GOOD, **changes})
    message = str(info.value)
    assert message.startswith(field), message
    assert fragment in message, message


@pytest.mark.parametrize("name", ["", "Upper", "under_score", "x" * 254, "-lead"])
def test_bad_name_is_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^name"):
        ElectionConfig(name)


def test_the_boundaries_themselves_are_valid() -> None:
    ElectionConfig("x", lease_duration=2, renew_deadline=1.3, retry_period=1)
    ElectionConfig("x", lease_duration=86400, renew_deadline=86399, retry_period=1)
    assert ElectionConfig("x", priority=-1_000_000).priority == -1_000_000
    assert ElectionConfig("x", priority=1_000_000.0).priority == 1_000_000  # type: ignore[arg-type]


def test_config_is_frozen_and_keyword_only() -> None:
    config = ElectionConfig("x")
    with pytest.raises(AttributeError):
        config.retry_period = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        ElectionConfig("x", None)  # type: ignore[call-arg]


def test_elector_requires_a_config_and_is_idle_until_run() -> None:
    with pytest.raises(ConfigurationError, match="ElectionConfig"):
        LeaderElector({"name": "x"})  # type: ignore[arg-type]
    elector = LeaderElector(ElectionConfig("lead", namespace="ns"))
    assert repr(elector) == "<LeaderElector ns/lead backend=konductor idle>"
    assert not elector.is_leader
    assert elector.leader is None
    assert elector.token is None
    assert elector.fencing is None
    stats = elector.statistics()
    assert (stats.terms, stats.evaluations, stats.is_leader) == (0, 0, False)

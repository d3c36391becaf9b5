"""Lease arguments are validated before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk import ConfigurationError
from konductor_sdk.lease import Lease


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ttl": 0}, "ttl must be whole seconds in [1, 86400], got 0"),
        ({"ttl": 86401}, "ttl must be whole seconds in [1, 86400], got 86401"),
        ({"ttl": 2.5}, "ttl must be whole seconds"),
        ({"ttl": "15"}, "ttl must be whole seconds"),
        ({"ttl": False}, "ttl must be whole seconds"),
        ({"priority": -1_000_001}, "priority must be a whole number in [-1000000, 1000000]"),
        ({"priority": 2**31}, "priority must be a whole number in [-1000000, 1000000]"),
        ({"priority": 1.5}, "priority must be a whole number"),
        ({"priority": "1"}, "priority must be a whole number"),
        ({"priority": True}, "priority must be a whole number"),
        ({"namespace": ""}, "namespace must be a non-empty string"),
        ({"namespace": "Not_Valid"}, "namespace must be a DNS subdomain"),
    ],
)
def test_bad_arguments_raise_configuration_error(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Lease("scheduler", **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["", "UPPER", "a" * 254, "has space", 7])
def test_bad_name(name: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"^name"):
        Lease(name)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="ttl"):
        Lease("x", ttl=0)


def test_repr_and_fresh_statistics() -> None:
    lease = Lease("scheduler", ttl=30, namespace="prod", priority=5)
    assert repr(lease) == "<Lease prod/scheduler ttl=30 priority=5 held=0 waiting=0>"
    stats = lease.statistics()
    assert (stats.held, stats.waiting, stats.acquisitions, stats.losses) == (0, 0, 0, 0)
    assert Lease("x", ttl=4.0).ttl == 4  # type: ignore[arg-type]
    # one priority range for every primitive (the lease's was 0..2**31-1)
    assert Lease("x", priority=-1_000_000).priority == -1_000_000
    assert Lease("x", priority=1_000_000).priority == 1_000_000


def test_positional_arguments_after_the_name_are_refused() -> None:
    with pytest.raises(TypeError):
        Lease("x", 15)  # type: ignore[call-arg]

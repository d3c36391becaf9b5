"""One validator for numbers across primitives: same answer, same message."""

from __future__ import annotations

import pytest

from konductor_sdk import ConfigurationError
from konductor_sdk._kernel.validate import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    check_int,
    check_priority,
    check_seconds,
    check_ttl,
)


@pytest.mark.parametrize("value", [1, 30, 86_400, 3.0, 30.0])
def test_ttl_accepts_whole_seconds(value: object) -> None:
    assert check_ttl(value) == int(value)  # type: ignore[call-overload]
    assert isinstance(check_ttl(value), int)


@pytest.mark.parametrize("value", [0, -1, 86_401, 2.5, True, "30", None, float("nan")])
def test_ttl_refuses_the_rest_naming_the_field_and_range(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"ttl must be whole seconds in \[1, 86400\]"):
        check_ttl(value)


def test_ttl_zero_only_where_allowed() -> None:
    assert check_ttl(0, allow_zero=True) == 0
    with pytest.raises(ConfigurationError, match="or 0"):
        check_ttl(-1, allow_zero=True)


def test_priority_has_one_range() -> None:
    assert check_priority(PRIORITY_MIN) == PRIORITY_MIN
    assert check_priority(PRIORITY_MAX) == PRIORITY_MAX
    for bad in (PRIORITY_MIN - 1, PRIORITY_MAX + 1, False, 1.5):
        with pytest.raises(ConfigurationError, match=r"priority must be a whole number"):
            check_priority(bad)


def test_int_and_seconds() -> None:
    assert check_int(4.0, "permits", 1, 10) == 4
    with pytest.raises(ConfigurationError, match=r"permits must be a whole number in \[1, 10\]"):
        check_int(11, "permits", 1, 10)
    assert check_seconds(0.5, "timeout") == 0.5
    for bad in (0, -1, True, "1"):
        with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
            check_seconds(bad, "timeout")

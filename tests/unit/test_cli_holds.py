"""``koncli run``: parsing of hold flags and the global acquisition order."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from konductor_sdk import ConfigurationError
from konductor_sdk.cli._holds import HoldSpec, build_specs, child_env, order, parse_semaphore

NAMES = st.sampled_from(["a", "b", "gpu", "ns1/a", "ns2/a", "z"])


def test_semaphore_references() -> None:
    assert parse_semaphore("gpu", 1) == HoldSpec("semaphore", "gpu")
    assert parse_semaphore("gpu:3", 1) == HoldSpec("semaphore", "gpu", weight=3)
    assert parse_semaphore("ml/gpu", 2) == HoldSpec("semaphore", "gpu", "ml", weight=2)
    assert parse_semaphore("ml/gpu:4", 2) == HoldSpec("semaphore", "gpu", "ml", weight=4)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"semaphores": ["gpu:0"]}, "weight must be an integer >= 1, got '0'"),
        ({"semaphores": ["gpu:x"]}, "weight must be an integer >= 1, got 'x'"),
        ({"semaphores": [":2"]}, "the name must not be empty"),
        ({"barriers": ["b:-1"]}, "expected must be an integer >= 1"),
        ({"mutexes": ["ns/"]}, "the name must not be empty"),
        ({"semaphores": ["gpu", "gpu:2"]}, "is given twice"),
        ({"reads": ["rw"], "writes": ["rw"]}, "is given twice"),
    ],
)
def test_bad_references_are_usage_errors(flags: dict[str, list[str]], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        build_specs(**flags)  # type: ignore[arg-type]


def test_waits_come_before_holds_and_kinds_have_a_fixed_order() -> None:
    specs = build_specs(
        semaphores=["gpu"], mutexes=["m"], leases=["l"], barriers=["b:3"], gates=["g"], reads=["r"]
    )
    assert [s.kind for s in specs] == ["gate", "barrier", "lease", "mutex", "rwmutex", "semaphore"]
    assert specs[1].expected == 3


@given(
    semaphores=st.lists(NAMES, unique=True, max_size=4),
    mutexes=st.lists(NAMES, unique=True, max_size=4),
    leases=st.lists(NAMES, unique=True, max_size=4),
    data=st.data(),
)
def test_the_order_does_not_depend_on_the_order_of_flags(
    semaphores: list[str], mutexes: list[str], leases: list[str], data: st.DataObject
) -> None:
    # Two processes naming the same locks in any order acquire them in the same order:
    # the condition that rules out lock-order deadlocks between koncli processes.
    first = build_specs(semaphores=semaphores, mutexes=mutexes, leases=leases)
    shuffled = build_specs(
        semaphores=data.draw(st.permutations(semaphores)),
        mutexes=data.draw(st.permutations(mutexes)),
        leases=data.draw(st.permutations(leases)),
    )
    assert first == shuffled
    assert first == order(reversed(first))
    assert [s.sort_key() for s in first] == sorted(s.sort_key() for s in first)


def test_child_environment() -> None:
    holds = [
        {"kind": "barrier", "name": "b", "index": 2},
        {"kind": "semaphore", "name": "gpu", "key": "k#1", "token": 7},
    ]
    env = child_env(holds)
    assert json.loads(env["KONDUCTOR_HOLDS"]) == holds
    assert env["KONDUCTOR_FENCING_TOKEN"] == "7"
    two = child_env([*holds, {"kind": "mutex", "name": "m", "key": "k#2", "token": 3}])
    assert "KONDUCTOR_FENCING_TOKEN" not in two  # ambiguous: read KONDUCTOR_HOLDS instead

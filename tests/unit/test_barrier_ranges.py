"""Departed index ranges against a plain set of indices."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from konductor_sdk._machines import barrier_ranges as r

spans = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 8)), max_size=12)


def as_set(ranges: Any) -> set[int]:
    return {i for first, count in ranges for i in range(first, first + count)}


@given(spans)
def test_adding_spans_matches_a_set_and_stays_canonical(items: list[tuple[int, int]]) -> None:
    ranges: r.Ranges = []
    model: set[int] = set()
    for first, count in items:
        new = set(range(first, first + count)) - model
        ranges, added = r.add(ranges, first, count)
        model |= new
        assert added == len(new)
        assert as_set(ranges) == model
        assert r.total(ranges) == len(model)
        # sorted, disjoint, not touching: the canonical form clean() also produces
        assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(ranges))
        assert r.clean(ranges) == ranges
    for index in range(0, 75):
        assert r.contains(ranges, index) == (index in model)
        assert r.count_below(ranges, index) == len([i for i in model if i < index])
        expected_rank = None if index in model else index - len([i for i in model if i < index])
        assert r.rank(ranges, index) == expected_rank


@given(spans, st.integers(0, 60), st.integers(1, 10))
def test_missing_from(items: list[tuple[int, int]], first: int, count: int) -> None:
    ranges: r.Ranges = []
    for f, c in items:
        ranges, _ = r.add(ranges, f, c)
    gaps = r.missing_from(ranges, first, count)
    assert as_set(gaps) == set(range(first, first + count)) - as_set(ranges)


@pytest.mark.parametrize(
    ("raw", "below", "clean"),
    [
        (None, None, []),
        ("x", None, []),
        ([[0, 2], [1, 3]], None, [[0, 4]]),
        ([[5, 1], [0, 1], [1, 1]], None, [[0, 2], [5, 1]]),
        ([[0, 0], [-1, 2], [2, "a"], [True, 1], [1]], None, []),
        ([[0, 10]], 4, [[0, 4]]),
        ([[6, 2]], 4, []),
    ],
)
def test_clean_is_total(raw: Any, below: int | None, clean: list[list[int]]) -> None:
    assert r.clean(raw, below=below) == clean

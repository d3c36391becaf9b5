"""Sets of arrival indices as sorted, disjoint ``[first, count]`` ranges.

A Barrier does not store its parties; it stores how many arrived and which arrival
*indices* left again before the generation concluded (``status.departed``). Departures are
rare and usually contiguous (a process's parties arrive, and die, together), so a handful
of ranges describes them. Everything here is pure and total: whatever is stored is
cleaned up into sorted, merged, non-empty ranges.

A party's **rank** when its generation opens is its index minus the number of departed
indices below it (:func:`count_below`), so the ranks of the parties that stayed are
exactly ``0..arrived-1`` in arrival order, and every process computes the same ranks from
the same frozen ``departed`` without listing anybody.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from konductor_sdk._kernel.validate import is_int

Ranges = list[list[int]]
"""``[[first, count], ...]``, sorted by ``first``, disjoint and not touching, counts >= 1."""


def clean(raw: Any, *, below: int | None = None) -> Ranges:
    """``raw`` as canonical ranges (malformed items dropped, overlaps merged), clipped to
    ``[0, below)`` when given."""
    pairs: list[tuple[int, int]] = []
    if isinstance(raw, list):
        for item in raw:
            if not isinstance(item, list | tuple) or len(item) != 2:
                continue
            first, count = item[0], item[1]
            if not (is_int(first) and is_int(count)) or first < 0 or count < 1:
                continue
            end = first + count if below is None else min(first + count, below)
            if end > first:
                pairs.append((first, end))
    return _merge(pairs)


def _merge(pairs: Iterable[tuple[int, int]]) -> Ranges:
    out: Ranges = []
    for first, end in sorted(pairs):
        if out and first <= out[-1][0] + out[-1][1]:
            last = out[-1]
            last[1] = max(last[0] + last[1], end) - last[0]
        else:
            out.append([first, end - first])
    return out


def total(ranges: Sequence[Sequence[int]]) -> int:
    """How many indices the ranges hold."""
    return sum(count for _, count in ranges)


def missing_from(ranges: Sequence[Sequence[int]], first: int, count: int) -> list[tuple[int, int]]:
    """The parts of ``[first, first+count)`` not in ``ranges``, as ``(first, count)``."""
    out: list[tuple[int, int]] = []
    cursor, end = first, first + count
    for r_first, r_count in ranges:
        r_end = r_first + r_count
        if r_end <= cursor:
            continue
        if r_first >= end:
            break
        if r_first > cursor:
            out.append((cursor, r_first - cursor))
        cursor = max(cursor, r_end)
        if cursor >= end:
            break
    if cursor < end:
        out.append((cursor, end - cursor))
    return out


def add(ranges: Sequence[Sequence[int]], first: int, count: int) -> tuple[Ranges, int]:
    """``ranges`` with ``[first, first+count)`` added, and how many indices were new."""
    new = missing_from(ranges, first, count)
    added = sum(c for _, c in new)
    if not added:
        return [list(r) for r in ranges], 0
    merged = _merge([(f, f + c) for f, c in ranges] + [(f, f + c) for f, c in new])
    return merged, added


def contains(ranges: Sequence[Sequence[int]], index: int) -> bool:
    """Whether ``index`` is in the ranges."""
    i = bisect.bisect_right(ranges, index, key=lambda r: r[0]) - 1
    return i >= 0 and index < ranges[i][0] + ranges[i][1]


def count_below(ranges: Sequence[Sequence[int]], index: int) -> int:
    """How many indices of the ranges are ``< index``."""
    below = 0
    for first, count in ranges:
        if first >= index:
            break
        below += min(count, index - first)
    return below


def rank(ranges: Sequence[Sequence[int]], index: int) -> int | None:
    """The rank of ``index`` once its generation opened with ``ranges`` departed, or
    ``None`` if ``index`` itself departed."""
    if contains(ranges, index):
        return None
    return index - count_below(ranges, index)

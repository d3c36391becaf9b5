"""The public fencing helper: per-slot "newest grant wins", checked against a model."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from konductor_sdk.fencing import Fence, FencedOut, FencingToken

R = "Semaphore/ns/pool@uid-1"


def test_three_holders_of_a_three_permit_semaphore_are_all_admitted() -> None:
    fence = Fence()
    holders = [FencingToken(R, (slot,), token) for slot, token in [(0, 5), (1, 6), (2, 7)]]
    for _ in range(3):  # each writes repeatedly, interleaved: never a false rejection
        for token in holders:
            fence.admit(token)


def test_a_stale_holder_is_fenced_out_once_its_slot_is_granted_again() -> None:
    fence = Fence()
    stale = FencingToken(R, (1,), 6)
    fence.admit(stale)
    fence.admit(FencingToken(R, (2,), 8))  # another slot: no effect on slot 1
    fence.admit(stale)
    fence.admit(FencingToken(R, (1,), 9))  # slot 1 re-granted
    with pytest.raises(FencedOut) as info:
        fence.admit(stale)
    assert (info.value.slot, info.value.newer) == (1, 9)
    assert "stale" in str(info.value)


def test_a_weighted_permit_is_fenced_out_when_any_of_its_slots_is_reused() -> None:
    fence = Fence()
    wide = FencingToken(R, (0, 1, 2), 4)
    fence.admit(wide)
    fence.admit(FencingToken(R, (2,), 5))
    assert not fence.admits(wide)


def test_resources_are_independent_and_a_recreated_object_is_a_new_resource() -> None:
    fence = Fence()
    fence.admit(FencingToken(R, (0,), 100))
    fence.admit(FencingToken("Semaphore/ns/pool@uid-2", (0,), 1))  # recreated: tokens restart


def test_snapshot_round_trips() -> None:
    fence = Fence()
    fence.admit(FencingToken(R, (0, 3), 7))
    again = Fence(fence.snapshot())
    assert again.highest(R, 3) == 7
    assert not again.admits(FencingToken(R, (3,), 6))


def test_a_token_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="slots"):
        FencingToken(R, (), 1)


def test_admit_is_atomic_across_threads() -> None:
    fence = Fence()
    accepted: list[int] = []
    lock = threading.Lock()

    def writer(value: int) -> None:
        try:
            fence.admit(FencingToken(R, (0,), value))
        except FencedOut:
            return
        with lock:
            accepted.append(value)

    threads = [threading.Thread(target=writer, args=(v,)) for v in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fence.highest(R) == 199
    assert 199 in accepted


writes = st.lists(
    st.tuples(st.sets(st.integers(0, 4), min_size=1, max_size=3), st.integers(1, 20)),
    max_size=40,
)


@given(writes)
def test_fence_matches_the_per_slot_model(sequence: list[tuple[set[int], int]]) -> None:
    fence = Fence()
    highest: dict[int, int] = {}
    for slots, value in sequence:
        token = FencingToken(R, tuple(sorted(slots)), value)
        expected = all(value >= highest.get(s, 0) for s in slots)
        assert fence.admits(token) is expected
        if expected:
            fence.admit(token)
            for s in slots:
                highest[s] = value
        else:
            with pytest.raises(FencedOut):
                fence.admit(token)
    for slot, value in highest.items():
        assert fence.highest(R, slot) == value

"""The pure WaitGroup state: never negative, epochs mark every drop to zero."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._machines import waitgroup as ws

NOW = "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("delta", [1.5, "1", None, True, ws.MAX_COUNTER + 1])
def test_bad_deltas_are_rejected(delta: Any) -> None:
    with pytest.raises(ConfigurationError, match="delta"):
        ws.check_delta(delta)


def test_negative_counter_is_rejected() -> None:
    s = ws.add({}, {}, delta=2, now=NOW)
    assert s is not None
    with pytest.raises(ConfigurationError, match=r"negative \(2 -3 = -1\)"):
        ws.add({}, s, delta=-3, now=NOW)
    with pytest.raises(ConfigurationError, match="negative"):
        ws.add({}, {}, delta=-1, now=NOW)


def test_dropping_to_zero_bumps_the_epoch_and_releases_waiters() -> None:
    s = ws.add({}, {}, delta=1, now=NOW)
    assert s is not None
    assert (s["phase"], s["epoch"]) == (ws.WAITING, 0)
    assert not ws.released(s, since_epoch=0)
    zero = ws.add({}, s, delta=-1, now=NOW)
    assert zero is not None
    assert (zero["phase"], zero["epoch"], zero["lastZeroAt"]) == (ws.DONE, 1, NOW)
    again = ws.add({}, zero, delta=1, now=NOW)
    assert again is not None
    # A waiter that saw epoch 0 and slept through the zero still returns.
    assert ws.released(again, since_epoch=0)
    assert not ws.released(again, since_epoch=1)
    assert ws.add({}, again, delta=0, now=NOW) is None


@given(st.lists(st.integers(-3, 3), max_size=50))
def test_the_counter_matches_a_model(deltas: list[int]) -> None:
    s: dict[str, Any] = {}
    model, zeros = 0, 0
    for delta in deltas:
        if model + delta < 0:
            with pytest.raises(ConfigurationError):
                ws.add({}, s, delta=delta, now=NOW)
            continue
        new = ws.add({}, s, delta=delta, now=NOW)
        if delta == 0:
            assert new is None
            continue
        assert new is not None
        if model > 0 and model + delta == 0:
            zeros += 1
        model += delta
        s = new
        assert (s["counter"], s["epoch"]) == (model, zeros)
        assert ws.normalize({}, s) == s

"""Pure state of a WaitGroup: a counter that ``wait()`` waits to see at zero.

Layout (see ``docs/barrier.md``, section WaitGroup)::

    counter: 3          # add(n) / done() change it by CAS; never negative
    epoch: 7            # bumped every time the counter drops to zero
    phase: Waiting|Done # Done while the counter is zero
    lastZeroAt          # wall time of the last drop to zero, for humans

``epoch`` lets a waiter that slept through a drop to zero (the counter went 2 -> 0 -> 1
before it looked) still return, like Go's ``sync.WaitGroup``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.objects import WAITGROUP, KObject
from konductor_sdk._kernel.validate import stored_int
from konductor_sdk._machines.rules import KindRules, register

Spec = Mapping[str, Any]
Status = dict[str, Any]

WAITING: Final = "Waiting"
DONE: Final = "Done"
MAX_COUNTER: Final = 2**31 - 1


def normalize(spec: Spec, status: Mapping[str, Any]) -> Status:
    """Defaults and the derived ``phase``. Pure and idempotent."""
    s: Status = copy.deepcopy(dict(status))
    s["counter"] = min(stored_int(s.get("counter"), minimum=0), MAX_COUNTER)
    s["epoch"] = stored_int(s.get("epoch"), minimum=0)
    s["phase"] = DONE if s["counter"] == 0 else WAITING
    return s


def check_delta(delta: object) -> int:
    """``delta`` if it is an integer that a counter could ever take.

    Raises:
        ConfigurationError: not an integer, or beyond ``MAX_COUNTER``.
    """
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise ConfigurationError(f"delta must be an integer, got {delta!r}")
    if abs(delta) > MAX_COUNTER:
        raise ConfigurationError(f"delta must be in -{MAX_COUNTER}..{MAX_COUNTER}, got {delta}")
    return delta


def add(spec: Spec, status: Mapping[str, Any], *, delta: int, now: str) -> Status | None:
    """The status with ``counter + delta``; ``None`` if ``delta`` is 0.

    Raises:
        ConfigurationError: the counter would become negative or exceed ``MAX_COUNTER``
            (nothing is written).
    """
    s = normalize(spec, status)
    new = s["counter"] + delta
    if new < 0:
        raise ConfigurationError(
            f"counter would become negative ({s['counter']} {delta:+d} = {new}): "
            "done() called more often than add()"
        )
    if new > MAX_COUNTER:
        raise ConfigurationError(f"counter would exceed {MAX_COUNTER} ({s['counter']} {delta:+d})")
    if delta == 0:
        return None
    if s["counter"] > 0 and new == 0:
        s["epoch"] += 1
        s["lastZeroAt"] = now
    s["counter"] = new
    return normalize(spec, s)


def released(status: Mapping[str, Any], *, since_epoch: int) -> bool:
    """Whether a waiter that first saw ``since_epoch`` may return."""
    s = normalize({}, status)
    return bool(s["counter"] == 0 or s["epoch"] > since_epoch)


def _gauges(obj: KObject) -> Mapping[str, float]:
    s = normalize(obj.spec, obj.status)
    return {"counter": float(s["counter"]), "epoch": float(s["epoch"])}


def _describe(obj: KObject) -> str:
    s = normalize(obj.spec, obj.status)
    return f"counter {s['counter']} ({s['phase']}), epoch {s['epoch']}"


RULES: Final = register(
    KindRules(
        kind=WAITGROUP,
        entry_maps=(),
        normalize=normalize,
        gauges=_gauges,
        describe=_describe,
    )
)

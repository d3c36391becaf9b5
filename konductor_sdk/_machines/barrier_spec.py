"""The spec of a Barrier: parsing what is stored (total) and validating what callers pass.

``spec`` is written by the creator (SDK ``create``/``wait``, koncli, kubectl); the CRD
checks it too (ranges, and a CEL rule ``quorum <= expected``), but callers get a
:class:`~konductor_sdk._kernel.errors.ConfigurationError` naming the argument before anything is
sent, and the pure state functions parse whatever is stored without ever failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import attrs

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.validate import check_int, stored_int

Spec = Mapping[str, Any]

MAX_EXPECTED: Final = 2**31 - 1
"""No cap tied to the object's size any more (status holds counters, not parties): the
bound is the int32 range Kubernetes uses for counts (a Job's ``completions`` too)."""
MAX_LAST_CALL_SECONDS: Final = 86_400.0
MAX_TIMEOUT_SECONDS: Final = 7 * 86_400.0


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@attrs.frozen
class BarrierSpec:
    """The configuration of one barrier (``spec`` of the object).

    Attributes:
        expected: parties that open it at once.
        quorum: parties that open it after ``last_call`` seconds (``None``: ``expected``).
        last_call: seconds the barrier stays open for late parties once ``quorum`` arrived.
        timeout: seconds after a generation's first arrival before it fails.
    """

    expected: int
    quorum: int | None = None
    last_call: float | None = None
    timeout: float | None = None

    @property
    def effective_quorum(self) -> int:
        return self.expected if self.quorum is None else max(1, min(self.quorum, self.expected))

    @property
    def last_call_seconds(self) -> float:
        return self.last_call or 0.0

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"expected": self.expected}
        if self.quorum is not None:
            out["quorum"] = self.quorum
        if self.last_call is not None:
            out["lastCallSeconds"] = _compact(self.last_call)
        if self.timeout is not None:
            out["timeoutSeconds"] = _compact(self.timeout)
        return out


def _compact(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


def parse_spec(spec: Spec) -> BarrierSpec:
    """A :class:`BarrierSpec` from whatever is stored; out-of-range fields get defaults."""
    expected = stored_int(spec.get("expected"), 1, minimum=1)
    quorum = spec.get("quorum")
    last_call = _real(spec.get("lastCallSeconds"))
    timeout = _real(spec.get("timeoutSeconds"))
    return BarrierSpec(
        expected=expected,
        quorum=stored_int(quorum, expected, minimum=1) if quorum is not None else None,
        last_call=max(last_call, 0.0) if last_call is not None else None,
        timeout=timeout if timeout is not None and timeout > 0 else None,
    )


def validate_spec(
    *,
    expected: object,
    quorum: object = None,
    last_call: object = None,
    timeout: object = None,
) -> BarrierSpec:
    """Check the arguments of a barrier; raise before anything is written.

    Raises:
        ConfigurationError: naming the argument and its allowed range.
    """
    expected = _whole("expected", expected, 1, MAX_EXPECTED)
    if quorum is not None:
        quorum = _whole("quorum", quorum, 1, expected, hi_name=f"expected ({expected})")
    lc = _seconds("last_call", last_call, 0.0, MAX_LAST_CALL_SECONDS, allow_zero=True)
    if lc is not None and quorum is None:
        raise ConfigurationError(
            "last_call needs quorum: it is how long a barrier waits for late parties "
            "after quorum parties arrived"
        )
    to = _seconds("timeout", timeout, 0.0, MAX_TIMEOUT_SECONDS, allow_zero=False)
    return BarrierSpec(expected=expected, quorum=quorum, last_call=lc, timeout=to)


def _whole(field: str, value: object, lo: int, hi: int, *, hi_name: str | None = None) -> int:
    # A count of parties is an int; 2.0 is as likely a mistake as 2.5 (and the CRD says so).
    if not isinstance(value, int):
        raise ConfigurationError(f"{field} must be an integer, got {value!r}")
    try:
        return check_int(value, field, lo, hi)
    except ConfigurationError:
        if hi_name is None:
            raise
        raise ConfigurationError(f"{field} must be in [{lo}, {hi_name}], got {value!r}") from None


def _seconds(
    field: str, value: object, low: float, high: float, *, allow_zero: bool
) -> float | None:
    if value is None:
        return None
    seconds = _real(value)
    bracket = "[" if allow_zero else "("
    if seconds is None or seconds > high or seconds < low or (seconds == low and not allow_zero):
        raise ConfigurationError(
            f"{field} must be a number of seconds in {bracket}{low:g}, {high:g}], got {value!r}"
        )
    return seconds

"""The one place that checks numbers a caller passes (ints, TTLs, priorities) and reads
integers back from stored objects.

Every primitive validates with the ``check_*`` functions before any I/O, so the same
argument gets the same answer and the same message everywhere (a TTL of ``3.0`` is 3
seconds for a Semaphore and a Lease alike; ``True`` is never a number). Messages name the
argument and the range. :func:`stored_int` is the other direction: a total read of a
field of whatever is stored (the operator runs the machines on anything), never raising.
"""

from __future__ import annotations

from typing import Any, Final, TypeGuard

from konductor_sdk._kernel.errors import ConfigurationError

MAX_TTL_SECONDS: Final = 86_400
PRIORITY_MIN: Final = -1_000_000
PRIORITY_MAX: Final = 1_000_000


def is_int(value: Any) -> TypeGuard[int]:
    """An ``int`` and not a ``bool`` (JSON gives ``true`` as ``True``, an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def stored_int(value: Any, default: int = 0, *, minimum: int | None = None) -> int:
    """A stored integer field: ``value`` if it is one (raised to ``minimum`` if given),
    else ``default``. Total: never raises, whatever was stored."""
    if not is_int(value):
        return default
    return value if minimum is None else max(value, minimum)


def check_int(value: object, field: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``; a float with no fractional part is accepted.

    Raises:
        ConfigurationError: naming ``field`` and the range.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigurationError(f"{field} must be a whole number in [{lo}, {hi}], got {value!r}")
    return value


def check_ttl(value: object, field: str = "ttl", *, allow_zero: bool = False) -> int:
    """A time to live in whole seconds, ``[1, 86400]`` (or ``0`` when ``allow_zero``: held
    until released or until the pod ends, which needs a pod).

    Raises:
        ConfigurationError: naming ``field`` and the range.
    """
    lo = 0 if allow_zero else 1
    try:
        return check_int(value, field, lo, MAX_TTL_SECONDS)
    except ConfigurationError:
        zero = " (or 0: until released or the pod ends)" if allow_zero else ""
        raise ConfigurationError(
            f"{field} must be whole seconds in [1, {MAX_TTL_SECONDS}]{zero}, got {value!r}"
        ) from None


def check_priority(value: object, field: str = "priority") -> int:
    """A priority, ``[-1000000, 1000000]``, higher served first; the same range for every
    primitive that queues (Semaphore, Mutex, RWMutex, Lease).

    Raises:
        ConfigurationError: naming ``field`` and the range.
    """
    return check_int(value, field, PRIORITY_MIN, PRIORITY_MAX)


def check_seconds(value: object, field: str, *, minimum: float = 0.0) -> float:
    """A positive duration in seconds (int or float, not bool), ``> minimum``.

    Raises:
        ConfigurationError: naming ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > minimum:
        raise ConfigurationError(
            f"{field} must be a number of seconds > {minimum:g}, got {value!r}"
        )
    return float(value)

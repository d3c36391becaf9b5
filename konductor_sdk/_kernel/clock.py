"""Injectable time.

Expiry is judged on a monotonic clock since an entry was last *seen* to change, never by
comparing someone else's wall-clock timestamp with ours; wall time is only written into
objects for humans. Tests inject :class:`FakeClock` instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol, final


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> dt.datetime: ...


@final
class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


@final
class FakeClock:
    """A clock that only moves when told to; ``skew`` shifts wall time only."""

    def __init__(self, start: float = 1000.0, skew: float = 0.0) -> None:
        self._mono = start
        self.skew = skew

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.skew)

    def advance(self, seconds: float) -> None:
        self._mono += seconds


SYSTEM_CLOCK = SystemClock()


def rfc3339(when: dt.datetime) -> str:
    """Kubernetes' date-time format, e.g. ``2026-11-27T08:50:00.123456Z``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))

"""Mapping of outcomes to koncli's documented exit codes."""

from __future__ import annotations

import signal

import pytest

from konductor_sdk import (
    APIError,
    ConfigurationError,
    LeadershipLost,
    NotFoundError,
    PermitLost,
    WouldBlock,
)
from konductor_sdk.cli._exitcodes import (
    ChildExited,
    ExitCode,
    Interrupted,
    WaitTimedOut,
    exit_code_for,
)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (WaitTimedOut("t"), 3),
        (WouldBlock("w"), 4),
        (PermitLost("p"), 5),
        (LeadershipLost("l"), 5),
        (ConfigurationError("c"), 2),
        (NotFoundError("n", status=404), 1),
        (APIError("a"), 1),
        (Interrupted(signal.SIGINT), 130),
        (Interrupted(signal.SIGTERM), 143),
        (ChildExited(17), 17),
        (KeyboardInterrupt(), 130),
        (RuntimeError("bug"), 1),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_groups_prefer_lost_then_signal_then_timeout() -> None:
    group = BaseExceptionGroup("g", [APIError("a"), WaitTimedOut("t")])
    assert exit_code_for(group) == ExitCode.TIMEOUT
    group = BaseExceptionGroup("g", [WaitTimedOut("t"), Interrupted(signal.SIGTERM)])
    assert exit_code_for(group) == 143
    nested = BaseExceptionGroup("g", [group, ExceptionGroup("h", [PermitLost("p")])])
    assert exit_code_for(nested) == ExitCode.LOST


def test_interrupted_names_the_signal() -> None:
    assert str(Interrupted(signal.SIGTERM)) == "interrupted by SIGTERM"

"""Exit codes, and the mapping from whatever ended a command to one of them.

Scripts branch on these, so they are part of the public interface (``docs/cli.md``):

====  =============================================================================
code  meaning
====  =============================================================================
0     success
1     error (API error, not found, forbidden, unreachable, bulk item failed...)
2     usage: bad flag, bad value, bad config file (nothing was written)
3     ``--timeout`` passed before the wait finished
4     would block: ``--nowait`` and the primitive was not free
5     lost: a permit/lease ended while held (``koncli run`` terminated the child)
126   ``koncli run``: the command was found but could not be executed
127   ``koncli run``: the command was not found
130   interrupted by SIGINT (Ctrl-C); 128+N for another signal N (143 for SIGTERM)
====  =============================================================================

``koncli run`` otherwise exits with the child's own code (128+N if a signal N killed it).
"""

from __future__ import annotations

import enum
import signal
from typing import final


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    TIMEOUT = 3
    WOULD_BLOCK = 4
    LOST = 5
    CANNOT_EXECUTE = 126
    NOT_FOUND = 127
    INTERRUPTED = 130


class CliError(Exception):
    """An error the CLI reports as one line on stderr and turns into ``exit_code``."""

    exit_code: int = ExitCode.ERROR


@final
class WaitTimedOut(CliError):
    """``--timeout`` passed before a wait finished."""

    exit_code = ExitCode.TIMEOUT


@final
class HoldLost(CliError):
    """A hold ended while ``koncli run``'s command ran; the message says how it was stopped
    (reported once, with the SDK's ``PermitLost``/``LeadershipLost`` as the cause)."""

    exit_code = ExitCode.LOST


@final
class Interrupted(CliError):
    """A signal ended the command; exit ``128 + signum`` like a shell reports it."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")
        self.signum = signum
        self.exit_code = 128 + signum


@final
class ChildExited(CliError):
    """Carries a child's exit status out of ``koncli run`` (never printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"child exited with {code}")
        self.exit_code = code


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a command that ended with ``exc``.

    Exception groups (several holds lost at once) map to their most specific member:
    lost beats a signal beats timeout beats everything else.
    """
    from konductor_sdk import ConfigurationError, LeadershipLost, PermitLost, WouldBlock

    if isinstance(exc, BaseExceptionGroup):
        codes = [exit_code_for(e) for e in exc.exceptions] or [int(ExitCode.ERROR)]
        if ExitCode.LOST in codes:
            return ExitCode.LOST
        signalled = [c for c in codes if c > 128]
        if signalled:
            return signalled[0]
        return ExitCode.TIMEOUT if ExitCode.TIMEOUT in codes else codes[0]
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, PermitLost | LeadershipLost):
        return ExitCode.LOST
    if isinstance(exc, WouldBlock):
        return ExitCode.WOULD_BLOCK
    if isinstance(exc, ConfigurationError):
        return ExitCode.USAGE
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.ERROR

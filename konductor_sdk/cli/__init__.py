"""koncli: the command-line face of every Konductor primitive.

:func:`main` runs the click application without click's standalone mode so that every way
a command can end (a Konductor error, a timeout, a signal, a lost permit, a child's exit
status) becomes one documented exit code (:mod:`konductor_sdk.cli._exitcodes`) and at
most one line on stderr. The ``koncli`` executable is :func:`entry_point`: ``main``, then
an exit that skips tearing the interpreter down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click

from ._commands import cli
from ._exitcodes import ChildExited, CliError, ExitCode, exit_code_for


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _report(exc: BaseException) -> None:
    from konductor_sdk import KonductorError, NotFoundError

    for leaf in _leaves(exc):
        if isinstance(leaf, ChildExited):
            continue
        if isinstance(leaf, NotFoundError) and "page not found" in str(leaf):
            # The API server answers a plain-text 404 for a resource it does not serve.
            click.echo(
                f"koncli: {str(leaf).strip()}\nkoncli: the cluster does not serve this "
                "kind: are the Konductor CRDs installed? (kubectl apply -f crds/)",
                err=True,
            )
        elif isinstance(leaf, CliError | KonductorError):
            click.echo(f"koncli: {leaf}", err=True)
        elif isinstance(leaf, KeyboardInterrupt | click.Abort):
            click.echo("koncli: interrupted", err=True)
        else:
            # Not an error we raise on purpose: a bug, so show where it happened.
            click.echo("koncli: internal error:", err=True)
            traceback.print_exception(leaf, file=sys.stderr)


def _unwrap(exc: BaseException) -> BaseException:
    # Task groups wrap even a single error in a group; report the error itself.
    leaves = _leaves(exc)
    return leaves[0] if len(leaves) == 1 else exc


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run koncli with ``argv`` (default ``sys.argv[1:]``) and exit with its exit code."""
    # koncli reports what goes wrong itself, once; the SDK's log records (a lost permit,
    # a failed watch) would repeat it on stderr through logging's last-resort handler.
    sdk_log = logging.getLogger("konductor_sdk")
    if not sdk_log.handlers:
        sdk_log.addHandler(logging.NullHandler())
    try:
        try:
            result = cli.main(args=argv, prog_name="koncli", standalone_mode=False)
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        _report(KeyboardInterrupt())
        sys.exit(ExitCode.INTERRUPTED)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        _report(exc)
        sys.exit(exit_code_for(exc))
    sys.exit(result if isinstance(result, int) else ExitCode.OK)


def entry_point() -> NoReturn:
    """The ``koncli`` executable: :func:`main`, then ``os._exit`` once output is flushed.

    Everything koncli does is finished by then (the command's releases are written, the
    client closed, a child reaped), but a normal interpreter exit would go on to tear down
    every imported module, which with the HTTP stack's thousands of generated classes takes
    about as long again as a command did: ``koncli run`` returned ~1 s after the next waiter
    had already been granted its permit. Scripts waiting on koncli should not wait for that.
    """
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"), as the interpreter would print it
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (koncli ... | head) has nothing left to flush to.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


__all__ = ["cli", "entry_point", "main"]

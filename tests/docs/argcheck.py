"""``python tests/docs/argcheck.py [-m MODULE | SCRIPT] [ARGS...]``: run ``python -m MODULE
ARGS...`` (or ``python SCRIPT ARGS...``) up to the point where it would start its work, and
stop there.

For the stand-ins of long-running commands in the docs (a benchmark of fifteen minutes):
the documented arguments go through the program's own parsing and checks, and the command
must get as far as ``anyio.run`` (its event loop), which is replaced by a stub. Exit status
0 only if that point was reached; a usage error exits as the program would (2).

Without arguments, the command is the documented one the doc tests pass in
``DOCTEST_COMMAND`` (``python ...``, a trailing ``# comment`` ignored), so a stand-in checks
exactly what the document shows.
"""

from __future__ import annotations

import os
import runpy
import shlex
import sys

import anyio


class _Reached(Exception):
    pass


def _stop(*args: object, **kwargs: object) -> None:
    raise _Reached


def main() -> int:
    words = sys.argv[1:]
    if not words:
        words = shlex.split(os.environ["DOCTEST_COMMAND"], comments=True)
        if words[:1] != ["python"]:
            print(f"not a `python` command: {words}", file=sys.stderr)
            return 2
        words = words[1:]
    anyio.run = _stop  # type: ignore[assignment]
    try:
        if words[0] == "-m":
            _, module, *argv = words
            sys.argv = [module, *argv]
            sys.path[0] = os.getcwd()  # as for `python -m`
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            script, *argv = words
            sys.argv = [script, *argv]
            sys.path[0] = os.path.dirname(os.path.abspath(script))  # as for `python SCRIPT`
            runpy.run_path(script, run_name="__main__")
    except _Reached:
        print(f"python {shlex.join(words)}: arguments accepted; not run")
        return 0
    print(f"python {shlex.join(words)}: ended without starting its work", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

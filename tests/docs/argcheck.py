"""``python tests/docs/argcheck.py [MODULE ARGS...]``: run ``python -m MODULE ARGS...`` up to
the point where it would start its work, and stop there.

For the stand-ins of long-running commands in the docs (a benchmark of fifteen minutes):
the documented arguments go through the program's own parsing and checks, and the command
must get as far as ``anyio.run`` (its event loop), which is replaced by a stub. Exit status
0 only if that point was reached; a usage error exits as the program would (2).

Without arguments, the command is the documented one the doc tests pass in
``DOCTEST_COMMAND`` (``python -m MODULE ARGS...``, a trailing ``# comment`` ignored), so a
stand-in checks exactly what the document shows.
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
        if words[:2] != ["python", "-m"]:
            print(f"not a `python -m` command: {words}", file=sys.stderr)
            return 2
        words = words[2:]
    module, *argv = words
    sys.argv = [module, *argv]
    sys.path[0] = os.getcwd()  # as for `python -m`
    anyio.run = _stop  # type: ignore[assignment]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except _Reached:
        print(f"python -m {' '.join(sys.argv)}: arguments accepted; not run")
        return 0
    print(f"python -m {module}: ended without starting its work", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""The CEL worker process of :mod:`konductor_sdk._kernel.cel_eval` (run by path, not imported).

Protocol: it prints ``READY``, then reads one JSON request per line
(``{"expression": ..., "object": ...}``) and answers one JSON line
(``{"value": <bool>}`` or ``{"error": "..."}``). It imports only the standard library and
``cel`` so that it starts quickly; its address space is capped by ``argv[1]`` bytes.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any


def _limit_memory(cap: int) -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):  # not POSIX or not allowed: time still bounds it
        pass


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


@functools.lru_cache(maxsize=256)
def _program(expression: str) -> Any:
    import cel

    return cel.compile(expression)


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one request; never raises."""
    try:
        program = _program(str(request["expression"]))
    except Exception as exc:
        return {"error": f"invalid CEL: {_first_line(exc)}"}
    try:
        result = program.execute({"object": request.get("object")})
    except KeyError as exc:
        return {"error": f"no such key: {exc.args[0] if exc.args else exc}"}
    except MemoryError:
        return {"error": "evaluation ran out of memory"}
    except Exception as exc:
        return {"error": f"evaluation error: {_first_line(exc)}"}
    if not isinstance(result, bool):
        return {"error": f"expression must evaluate to a bool, got {type(result).__name__}"}
    return {"value": result}


def main() -> None:
    if len(sys.argv) > 1:
        _limit_memory(int(sys.argv[1]))
    import cel  # noqa: F401 - loaded before READY, so no evaluation pays for the import

    out = sys.stdout
    out.write("READY\n")
    out.flush()
    for line in sys.stdin:
        try:
            reply = answer(json.loads(line))
        except (ValueError, TypeError, AttributeError) as exc:
            reply = {"error": f"bad request: {exc}"}
        except MemoryError:
            reply = {"error": "evaluation ran out of memory"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

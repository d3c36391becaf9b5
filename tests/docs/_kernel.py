"""The child process that runs one document's Python blocks, like a notebook.

Started as ``python tests/docs/_kernel.py FD`` by the doc tests; reads one JSON request per
line on stdin (``{"code", "filename", "line"}``) and answers each on file descriptor ``FD``
(``{"ok": true}`` or ``{"ok": false, "error": "<traceback>"}``), so that whatever the blocks
print goes to stdout/stderr untouched. Every block runs in the same globals:

* a block with top-level ``await`` / ``async with`` / ``async for`` is compiled with
  ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` and its coroutine runs on one persistent
  ``asyncio.Runner`` (so an async client made by one block serves the next);
* any other block runs in the main thread, outside the loop, as a script would: blocking
  ``konductor_sdk.sync`` calls and ``anyio.run(main)`` work there.

Blocks are compiled with their Markdown file name and line offset, so tracebacks name the
document's own lines. SIGINT (the parent's time bound) interrupts the running block with a
traceback showing where it hung.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import json
import os
import sys
import traceback
from typing import Any


def _close_default_client(runner: asyncio.Runner) -> None:
    # The async default client of the persistent loop belongs to the notebook, not to any
    # block: close it as a script's event loop ending would have to.
    client_module = sys.modules.get("konductor_sdk._kernel.client")
    if client_module is None:
        return
    client = client_module._DEFAULTS.get(runner.get_loop())
    if client is not None:
        runner.run(client.aclose())


def main() -> None:
    reply = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, "")  # the working directory, as for `python -c`
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    runner = asyncio.Runner()
    used_loop = False
    for request_line in sys.stdin:
        request = json.loads(request_line)
        marker = f"----- {request['filename']}:{request['line']} -----"
        print(marker, flush=True)
        try:
            source = "\n" * (request["line"] - 1) + request["code"]
            code = compile(
                source,
                request["filename"],
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
            if code.co_flags & inspect.CO_COROUTINE:
                used_loop = True
                runner.run(eval(code, namespace))
            else:
                exec(code, namespace)
        except BaseException:
            answer = {"ok": False, "error": traceback.format_exc()}
        else:
            answer = {"ok": True}
        sys.stdout.flush()
        sys.stderr.flush()
        reply.write(json.dumps(answer) + "\n")
    if used_loop:
        _close_default_client(runner)
    runner.close()


if __name__ == "__main__":
    main()

"""``koncli once ...``: run a command exactly once cluster-wide; status; reset.

``koncli once run NAME -- CMD`` runs CMD in exactly one of the callers (the others wait
for its outcome). A zero exit is recorded as done; a non-zero exit as failed, and every
caller then exits non-zero: the runner with CMD's own code, the others with 1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

import click

from . import _app, _output, _verbs
from ._child import ChildProcess, command_argv
from ._exitcodes import ChildExited


@click.command("run")
@_verbs.name_arg("once")
@_app.ttl_option
@_app.timeout_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_app.async_command
async def run(
    name: str, ttl: int | None, wait_timeout: float | None, command: tuple[str, ...]
) -> None:
    """Run COMMAND unless it already ran (or is running) under NAME; exit with its outcome.

    \b
    koncli once run db-schema --ttl 60 -- ./migrate.sh --apply

    Options go before '--'; everything after it is COMMAND. The runner's claim is renewed
    while COMMAND runs; if the runner dies, another caller takes over after --ttl seconds.
    """
    command = command_argv(command, "koncli once run NAME [OPTIONS] -- COMMAND [ARGS]...")
    from konductor_sdk import OnceFailed
    from konductor_sdk.once import Once

    cfg = _app.settings()
    ran: list[int] = []

    async def fn() -> dict[str, Any]:
        status = await ChildProcess(command, env=dict(os.environ)).run()
        ran.append(status)
        if status != 0:
            raise ChildExited(status)
        return {"exitCode": status}

    async with _app.open_client(cfg) as client:
        obj = Once(name, client=client, ttl=ttl or cfg.ttl("once"))
        try:
            with _app.wait_limit(wait_timeout, f"once {name}"):
                result = await obj.run(fn)
        except OnceFailed as exc:
            if ran:
                raise ChildExited(ran[0]) from exc
            raise
    if not ran:
        _output.message(f"koncli: once {name} already done, not running the command")
    fmt = _app.output_format()
    if fmt != "text":  # in text mode stdout belongs to COMMAND alone
        _output.emit({"name": name, "ran": bool(ran), "result": result}, fmt)


@click.command("status")
@_verbs.name_arg("once")
@_app.async_command
async def status(name: str) -> None:
    """Phase (Pending, Running, Done, Failed), runner and result."""
    from konductor_sdk.once import Once

    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await Once(name, client=client).status())


@click.command("reset")
@_verbs.name_arg("once")
@_app.async_command
async def reset(name: str) -> None:
    """Forget the outcome so the next 'once run' runs again."""
    from konductor_sdk.once import Once

    async with _app.open_client(_app.settings()) as client:
        done = await Once(name, client=client).reset()
    click.echo(f"once {name}: {'reset' if done else 'nothing to reset'}", err=True)


VERBS: Final[Mapping[str, Sequence[tuple[str, click.Command]]]] = {
    "once": [(c.name or "", c) for c in (run, status, reset)],
}

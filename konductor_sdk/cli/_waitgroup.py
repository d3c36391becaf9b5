"""``koncli waitgroup ...``: add, done, wait, status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import click

from . import _app, _output, _verbs


def _emit_counter(name: str, counter: int) -> None:
    data = {"name": name, "counter": counter}
    _output.emit(data, _app.output_format(), lambda d: str(d["counter"]))


# ignore_unknown_options: a negative DELTA (`add wg -3`) is an argument, not an option.
@click.command("add", context_settings={"ignore_unknown_options": True})
@_verbs.name_arg("waitgroup")
@click.argument("delta", type=int, default=1)
@_app.async_command
async def add(name: str, delta: int) -> None:
    """Add DELTA (default 1, may be negative: 'add NAME -3') to the counter; print the new
    value (exit 2 if it would drop below 0)."""
    from konductor_sdk.waitgroup import WaitGroup

    async with _app.open_client(_app.settings()) as client:
        _emit_counter(name, await WaitGroup(name, client=client).add(delta))


@click.command("done")
@_verbs.name_arg("waitgroup")
@_app.async_command
async def done(name: str) -> None:
    """Decrement the counter; print the new value (exit 2 if it is already 0)."""
    from konductor_sdk.waitgroup import WaitGroup

    async with _app.open_client(_app.settings()) as client:
        _emit_counter(name, await WaitGroup(name, client=client).done())


@click.command("wait")
@_verbs.name_arg("waitgroup")
@_app.timeout_option
@_app.async_command
async def wait(name: str, wait_timeout: float | None) -> None:
    """Wait until the counter is zero."""
    from konductor_sdk.waitgroup import WaitGroup

    async with _app.open_client(_app.settings()) as client:
        with _app.wait_limit(wait_timeout, f"waitgroup {name}"):
            await WaitGroup(name, client=client).wait()


@click.command("status")
@_verbs.name_arg("waitgroup")
@_app.async_command
async def status(name: str) -> None:
    """The counter and its history."""
    from konductor_sdk.waitgroup import WaitGroup

    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await WaitGroup(name, client=client).status())


VERBS: Final[Mapping[str, Sequence[tuple[str, click.Command]]]] = {
    "waitgroup": [(c.name or "", c) for c in (add, done, wait, status)],
}

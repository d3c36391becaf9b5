"""Helpers shared by the per-primitive verb modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from . import _app, _output


def name_arg(kind: str) -> Callable[[Any], Any]:
    from ._complete import complete_names

    return click.argument("name", shell_complete=complete_names(kind))


def nowait_option(func: Any) -> Any:
    return click.option(
        "--nowait", is_flag=True, help="Do not wait: exit 4 if it is not free right now."
    )(func)


def quiet_option(func: Any) -> Any:
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="No progress on stderr (while waiting, on a terminal: the place in the queue "
        "and who holds).",
    )(func)


def check_nowait(nowait: bool, wait_timeout: float | None) -> None:
    """``--nowait`` and ``--timeout`` contradict each other.

    Raises:
        ConfigurationError: both were given.
    """
    if nowait and wait_timeout is not None:
        from konductor_sdk._kernel.errors import ConfigurationError

        raise ConfigurationError(
            "--nowait and --timeout contradict each other: --nowait never waits "
            "(exit 4 if not free), --timeout bounds a wait; give one"
        )


def emit_grant(grant: dict[str, Any], *, quiet: bool = False) -> None:
    """A detached acquisition: text output is the key alone (``KEY=$(koncli ...)``), with
    a human line on stderr (not with ``quiet``); JSON/YAML carry every field."""
    fmt = _app.output_format()
    if fmt == "text" and quiet:
        click.echo(grant["key"])
        return
    if fmt == "text":
        token = grant.get("token")
        how = f"token {token}, " if token is not None else ""
        ttl = grant.get("ttlSeconds")
        until = "until released or the pod ends" if ttl == 0 else f"ttl {ttl}s, not renewed"
        _output.message(
            f"koncli: acquired {grant['kind']} {grant['namespace']}/{grant['name']} "
            f"({how}{until}); release with: koncli {grant['kind']} release "
            f"{grant['name']} {grant['key']}"
        )
        click.echo(grant["key"])
        return
    _output.emit(grant, fmt)


def emit_status(status: Any) -> None:
    """A primitive's ``status()`` (a frozen attrs object) in the chosen format; in text,
    scalar fields form one table and each list of records (holders, waiters...) another."""
    data = _output.plain(status)
    _output.emit(data, _app.output_format(), render_status)


def render_status(data: Any) -> Any:
    from rich.console import Group

    if not isinstance(data, dict):
        return _output.kv_table(data)

    def records(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    scalars = {k: v for k, v in data.items() if not records(v)}
    parts: list[Any] = [_output.kv_table(scalars)]
    for key, value in data.items():
        if records(value):
            columns = list(dict.fromkeys(c for row in value for c in row))
            rows = ([row.get(c) for c in columns] for row in value)
            title = f"{key} ({len(value)})"
            parts.append(_output.table([c.upper() for c in columns], rows, title=title))
    return Group(*parts)


def detached_ttl(ttl: int | None, for_pod: bool) -> int:
    """The TTL of an entry nobody will renew once koncli exits.

    Raises:
        ConfigurationError: neither ``--ttl`` nor ``--for-pod``, or both.
    """
    from konductor_sdk._kernel.errors import ConfigurationError

    if for_pod:
        if ttl is not None:
            raise ConfigurationError(
                "--for-pod holds until release or pod end (ttl 0); do not combine it with --ttl"
            )
        return 0
    if ttl is None:
        raise ConfigurationError(
            "--ttl is required: nobody renews the entry after koncli exits, so it expires "
            "after --ttl seconds (or use --for-pod in a pod: held until the pod ends)"
        )
    return ttl

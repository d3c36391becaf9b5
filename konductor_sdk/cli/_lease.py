"""``koncli lease ...``: create, status, acquire/release, and ``elect`` (run while leader)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import click

from . import _app, _holds, _run, _verbs
from ._child import command_argv
from ._exitcodes import ChildExited, CliError


@click.command("create")
@_verbs.name_arg("lease")
@_app.ttl_option
@click.option("--exist-ok", is_flag=True, help="Succeed if it exists already.")
@_app.async_command
async def create(name: str, ttl: int | None, exist_ok: bool) -> None:
    """Create a lease with spec.ttlSeconds (default: config ttl.lease, 15)."""
    from konductor_sdk.lease import Lease

    cfg = _app.settings()
    async with _app.open_client(cfg) as client:
        obj = Lease(name, ttl=ttl or cfg.ttl("lease"), client=client)
        await obj.create(exist_ok=exist_ok)
        _verbs.emit_status(await obj.status())


@click.command("status")
@_verbs.name_arg("lease")
@_app.async_command
async def status(name: str) -> None:
    """Holder, fencing token, candidates."""
    from konductor_sdk.lease import Lease

    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await Lease(name, client=client).status())


@click.command("acquire")
@_verbs.name_arg("lease")
@_app.ttl_option
@click.option(
    "--priority",
    type=click.IntRange(-1_000_000, 1_000_000),
    default=0,
    show_default=True,
    help="Higher is served first (the same range for every primitive).",
)
@_verbs.nowait_option
@_app.timeout_option
@_verbs.quiet_option
@_app.async_command
async def acquire(
    name: str,
    ttl: int | None,
    priority: int,
    nowait: bool,
    wait_timeout: float | None,
    quiet: bool,
) -> None:
    """Take the lease and exit, leaving it held for --ttl seconds (required: nobody
    renews it after koncli exits). Prints the key for 'koncli lease release'.

    To hold a lease while a command runs, use 'koncli lease elect' or 'koncli run --lease'.
    """
    from konductor_sdk._kernel.objects import LEASE
    from konductor_sdk.lease import Lease

    from . import _progress

    _verbs.check_nowait(nowait, wait_timeout)
    seconds = _verbs.detached_ttl(ttl, for_pod=False)
    async with _app.open_client(_app.settings()) as client:
        obj = Lease(name, ttl=seconds, client=client, priority=priority)
        what = f"lease {client.namespace}/{name}"
        with _app.wait_limit(wait_timeout, f"lease {name}"):
            if nowait:
                held = await obj.acquire_nowait()
            else:
                async with _progress.object_progress(
                    client, LEASE, client.namespace, name, _progress.lease_line, what, quiet=quiet
                ):
                    held = await obj.acquire()
        _verbs.emit_grant(
            {
                "kind": "lease",
                "namespace": held.namespace,
                "name": held.name,
                "key": held.key,
                "token": held.token,
                "holder": held.holder,
                "ttlSeconds": seconds,
            },
            quiet=quiet,
        )


@click.command("release")
@_verbs.name_arg("lease")
@click.argument("key")
@_app.async_command
async def release(name: str, key: str) -> None:
    """Release the acquisition KEY (printed by 'koncli lease acquire') or a holder id."""
    from . import _sdk

    async with _app.open_client(_app.settings()) as client:
        removed = await _sdk.force_release(client, "lease", client.namespace, name, key)
    if not removed:
        raise CliError(f"lease {name}: no holder or candidate with key or id {key!r}")
    click.echo(f"lease {name}: released {', '.join(removed)}", err=True)


@click.command("elect")
@_verbs.name_arg("lease")
@_app.ttl_option
@click.option(
    "--priority",
    type=click.IntRange(-1_000_000, 1_000_000),
    default=0,
    show_default=True,
    help="Higher is served first (the same range for every primitive).",
)
@_app.timeout_option
@click.option("--grace-period", type=click.FloatRange(min=0), default=None, metavar="SECONDS")
@_verbs.quiet_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def elect(
    name: str,
    ttl: int | None,
    priority: int,
    wait_timeout: float | None,
    grace_period: float | None,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Wait to become leader, then run COMMAND while leading (same as run --lease NAME).

    \b
    koncli lease elect scheduler --ttl 15 -- python scheduler.py

    Options go before '--'; everything after it is COMMAND. If leadership is lost COMMAND
    is stopped and koncli exits 5; a supervisor (Deployment, systemd) restarts it to
    campaign again.
    """
    command = command_argv(command, "koncli lease elect NAME [OPTIONS] -- COMMAND [ARGS]...")
    specs = _holds.build_specs(leases=[name])
    status = _app.run_async(
        lambda: _run.run_holding(
            specs,
            command,
            cfg=_app.settings(),
            ttl=ttl,
            priority=priority,
            acquire_within=wait_timeout,
            grace=grace_period,
            quiet=quiet,
        ),
        handle_signals=False,
    )
    if status != 0:
        raise ChildExited(status)


VERBS: Final[Mapping[str, Sequence[tuple[str, click.Command]]]] = {
    "lease": [(c.name or "", c) for c in (create, status, acquire, release, elect)],
}

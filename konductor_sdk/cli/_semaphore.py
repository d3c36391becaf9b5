"""``koncli semaphore|mutex|rwmutex ...``: the semaphore family's verbs.

Detached acquisitions (``acquire``/``lock``) leave the permit held after koncli exits:
with ``--ttl N`` (required) it expires N seconds later unless released, since nobody
renews it; with ``--for-pod`` (in a pod, e.g. an initContainer) it is held by the pod
(holder = pod name + UID, ttl 0) until released or until the pod ends, when the operator
reaps it. Either way the key is printed for ``release``/``unlock``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import click

from konductor_sdk._kernel.errors import ConfigurationError

from . import _app, _sdk, _verbs
from ._exitcodes import CliError

for_pod_option = click.option(
    "--for-pod",
    is_flag=True,
    help="Hold on behalf of this pod (POD_NAME/POD_NAMESPACE/POD_UID from the downward API): "
    "held until released or the pod ends.",
)
priority_option = click.option(
    "--priority", type=int, default=0, show_default=True, help="Higher is served first."
)


def pod_identity() -> Any:
    """This pod's identity for ``--for-pod``.

    Raises:
        ConfigurationError: not in a pod (no POD_NAME/POD_NAMESPACE, no service account).
    """
    from konductor_sdk._kernel.identity import detect

    identity = detect()
    if identity.pod is None:
        raise ConfigurationError(
            "--for-pod needs the pod's identity: set POD_NAME, POD_NAMESPACE and POD_UID "
            "from the downward API (see docs/cli.md)"
        )
    return identity


async def _acquire(
    kind: str,
    name: str,
    *,
    ttl: int | None,
    for_pod: bool,
    nowait: bool,
    wait_timeout: float | None,
    quiet: bool,
    **acquire_kw: Any,
) -> None:
    from ._progress import queue_progress

    _verbs.check_nowait(nowait, wait_timeout)
    seconds = _verbs.detached_ttl(ttl, for_pod)
    identity = pod_identity() if for_pod else None
    async with _app.open_client(_app.settings(), identity=identity) as client:
        if for_pod and not (client.identity.pod and client.identity.pod.uid):
            # Without the UID a same-named successor pod would keep the permit forever.
            raise ConfigurationError(
                "--for-pod needs the pod UID: set POD_UID from the downward API "
                "(fieldRef metadata.uid) or allow the pod to get itself"
            )
        obj = _sdk.front(client, kind, name, ttl=seconds)
        what = f"{kind} {client.namespace}/{name}"
        with _app.wait_limit(wait_timeout, f"{kind} {name}"):
            if nowait:
                permit = await obj.acquire_nowait(**acquire_kw)
            else:
                async with queue_progress(client, obj, what, quiet=quiet):
                    permit = await obj.acquire(**acquire_kw)
        _verbs.emit_grant(_sdk.grant_info(permit, obj, kind, client), quiet=quiet)


async def _release(kind: str, name: str, keys: tuple[str, ...]) -> None:
    async with _app.open_client(_app.settings()) as client:
        for who in keys:
            removed = await _sdk.force_release(client, kind, client.namespace, name, who)
            if not removed:
                raise CliError(f"{kind} {name}: no holder with key or id {who!r}")
            click.echo(f"{kind} {name}: released {', '.join(removed)}", err=True)


async def _status(kind: str, name: str) -> None:
    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await _sdk.front(client, kind, name).status())


def _release_command(kind: str, verb: str) -> click.Command:
    @click.command(verb)
    @_verbs.name_arg(kind)
    @click.argument("keys", nargs=-1, required=True)
    @_app.async_command
    async def release(name: str, keys: tuple[str, ...]) -> None:
        """Release permits by acquisition KEY (as printed by acquire) or holder id.

        The holder, if still running, sees its permit lost.
        """
        await _release(kind, name, keys)

    return release


def _status_command(kind: str) -> click.Command:
    @click.command("status")
    @_verbs.name_arg(kind)
    @_app.async_command
    async def status(name: str) -> None:
        """Limit, in use, holders and the wait queue in service order."""
        await _status(kind, name)

    return status


# --- semaphore ----------------------------------------------------------------------------


@click.command("create")
@_verbs.name_arg("semaphore")
@click.option("--permits", type=int, required=True, help="spec.permits, 1..1000000.")
@click.option("--burst", type=int, default=0, show_default=True, help="spec.burst units.")
@click.option("--burst-seconds", type=int, default=60, show_default=True)
@_app.async_command
async def sem_create(name: str, permits: int, burst: int, burst_seconds: int) -> None:
    """Create a semaphore with PERMITS units."""
    from konductor_sdk.semaphore import Semaphore

    Semaphore(name, permits=permits, burst=burst, burst_seconds=burst_seconds)  # validate
    async with _app.open_client(_app.settings()) as client:
        obj = _sdk.front(client, "semaphore", name)
        _verbs.emit_status(
            await obj.create(permits=permits, burst=burst, burst_seconds=burst_seconds)
        )


@click.command("acquire")
@_verbs.name_arg("semaphore")
@click.option("--weight", type=int, default=1, show_default=True, help="Units to take.")
@priority_option
@_app.ttl_option
@for_pod_option
@_verbs.nowait_option
@_app.timeout_option
@_verbs.quiet_option
@_app.async_command
async def sem_acquire(
    name: str,
    weight: int,
    priority: int,
    ttl: int | None,
    for_pod: bool,
    nowait: bool,
    wait_timeout: float | None,
    quiet: bool,
) -> None:
    """Acquire permits and exit, leaving them held; print the key.

    Needs --ttl (held that long, not renewed) or --for-pod (held until the pod ends).
    To hold permits exactly while a command runs, use 'koncli run --semaphore'.
    """
    await _acquire(
        "semaphore",
        name,
        ttl=ttl,
        for_pod=for_pod,
        nowait=nowait,
        wait_timeout=wait_timeout,
        quiet=quiet,
        weight=weight,
        priority=priority,
    )


@click.command("set-permits")
@_verbs.name_arg("semaphore")
@click.argument("permits", type=int)
@click.option("--burst", type=int, default=None)
@click.option("--burst-seconds", type=int, default=None)
@_app.async_command
async def sem_set_permits(
    name: str, permits: int, burst: int | None, burst_seconds: int | None
) -> None:
    """Change spec.permits; waiters that now fit are granted at once."""
    async with _app.open_client(_app.settings()) as client:
        obj = _sdk.front(client, "semaphore", name)
        _verbs.emit_status(await obj.set_permits(permits, burst=burst, burst_seconds=burst_seconds))


# --- mutex --------------------------------------------------------------------------------


@click.command("create")
@_verbs.name_arg("mutex")
@_app.async_command
async def mutex_create(name: str) -> None:
    """Create a mutex (locking creates it too)."""
    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await _sdk.front(client, "mutex", name).create())


@click.command("lock")
@_verbs.name_arg("mutex")
@priority_option
@_app.ttl_option
@for_pod_option
@_verbs.nowait_option
@_app.timeout_option
@_verbs.quiet_option
@_app.async_command
async def mutex_lock(
    name: str,
    priority: int,
    ttl: int | None,
    for_pod: bool,
    nowait: bool,
    wait_timeout: float | None,
    quiet: bool,
) -> None:
    """Lock and exit, leaving it locked; print the key for 'unlock'.

    Needs --ttl or --for-pod. To hold it while a command runs: 'koncli run --mutex'.
    """
    await _acquire(
        "mutex",
        name,
        ttl=ttl,
        for_pod=for_pod,
        nowait=nowait,
        wait_timeout=wait_timeout,
        quiet=quiet,
        priority=priority,
    )


# --- rwmutex ------------------------------------------------------------------------------


@click.command("create")
@_verbs.name_arg("rwmutex")
@click.option("--max-readers", type=int, default=1024, show_default=True)
@_app.async_command
async def rw_create(name: str, max_readers: int) -> None:
    """Create a reader/writer mutex."""
    async with _app.open_client(_app.settings()) as client:
        obj = _sdk.front(client, "rwmutex", name, max_readers=max_readers)
        _verbs.emit_status(await obj.create())


@click.command("lock")
@_verbs.name_arg("rwmutex")
@click.option("--read", is_flag=True, help="Shared read lock.")
@click.option("--write", is_flag=True, help="Exclusive write lock.")
@priority_option
@_app.ttl_option
@for_pod_option
@_verbs.nowait_option
@_app.timeout_option
@_verbs.quiet_option
@_app.async_command
async def rw_lock(
    name: str,
    read: bool,
    write: bool,
    priority: int,
    ttl: int | None,
    for_pod: bool,
    nowait: bool,
    wait_timeout: float | None,
    quiet: bool,
) -> None:
    """Lock for --read or --write and exit, leaving it locked; print the key."""
    if read == write:
        raise ConfigurationError("give exactly one of --read or --write")
    mode = "read" if read else "write"
    await _acquire(
        "rwmutex",
        name,
        ttl=ttl,
        for_pod=for_pod,
        nowait=nowait,
        wait_timeout=wait_timeout,
        quiet=quiet,
        mode=mode,
        priority=priority,
    )


VERBS: Final[Mapping[str, Sequence[tuple[str, click.Command]]]] = {
    "semaphore": [
        ("create", sem_create),
        ("acquire", sem_acquire),
        ("set-permits", sem_set_permits),
        ("status", _status_command("semaphore")),
        ("release", _release_command("semaphore", "release")),
    ],
    "mutex": [
        ("create", mutex_create),
        ("lock", mutex_lock),
        ("acquire", mutex_lock),
        ("unlock", _release_command("mutex", "unlock")),
        ("release", _release_command("mutex", "release")),
        ("status", _status_command("mutex")),
    ],
    "rwmutex": [
        ("create", rw_create),
        ("lock", rw_lock),
        ("acquire", rw_lock),
        ("unlock", _release_command("rwmutex", "unlock")),
        ("release", _release_command("rwmutex", "release")),
        ("status", _status_command("rwmutex")),
    ],
}

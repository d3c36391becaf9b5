"""``koncli watch``: a live table of the primitives in a namespace.

Driven by the client's shared watches (one per kind, list-then-watch, the same cache the
primitives wait on): the table is redrawn when an object changes and never otherwise, so
an idle namespace costs no requests. Kinds whose CRD the cluster does not serve are left
out. ``--once`` prints the table (or JSON/YAML rows) a single time, for scripts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import click
from rich.console import Console, RenderableType
from rich.live import Live

from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.objects import ResourceKind

from . import _app, _generic, _objects, _output
from ._exitcodes import Interrupted

if TYPE_CHECKING:
    from konductor_sdk import Client
    from konductor_sdk._kernel.watch import KindWatch

RenderHook = Callable[[list[dict[str, Any]]], None]


async def served_kinds(
    client: Client, kinds: Sequence[ResourceKind], namespace: str | None
) -> list[ResourceKind]:
    """The kinds the cluster serves (a missing CRD answers 404 on list)."""
    served = []
    for kind in kinds:
        try:
            await client.store.list(kind, namespace)
        except NotFoundError:
            continue
        served.append(kind)
    return served


def snapshot(watches: Sequence[KindWatch]) -> list[dict[str, Any]]:
    """Rows for every cached object, ordered by kind (as in ``KINDS``), namespace, name."""
    rows = []
    for watch in watches:
        for obj in sorted(watch.objects(), key=lambda o: (o.namespace, o.name)):
            rows.append(_objects.row(obj))
    return rows


def render(rows: list[dict[str, Any]], namespace: str | None) -> RenderableType:
    where = namespace if namespace is not None else "all namespaces"
    now = dt.datetime.now().strftime("%H:%M:%S")
    title = f"konductor primitives in {where}: {len(rows)} objects (updated {now})"
    return _generic.list_table(rows, title=title, namespaces=namespace is None)


async def _wait_any(events: Sequence[anyio.Event]) -> None:
    async with anyio.create_task_group() as tg:

        async def wait_one(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait_one, event)


async def watch_view(
    client: Client,
    kinds: Sequence[ResourceKind],
    namespace: str | None,
    *,
    console: Console,
    on_render: RenderHook | None = None,
) -> None:
    """Redraw the table on every change until cancelled (Ctrl-C)."""
    watches = [
        await client.watch(k, namespace) for k in await served_kinds(client, kinds, namespace)
    ]
    # On a terminal the table is redrawn in place; into a pipe or a log (where rich's Live
    # would print nothing until the end) each change appends a new table.
    live = Live(console=console, auto_refresh=False, redirect_stderr=False)
    with live if console.is_terminal else contextlib.nullcontext():
        while True:
            # Take the events before reading the caches: a change in between still wakes us.
            changed = [w.next_any_change() for w in watches]
            rows = snapshot(watches)
            if console.is_terminal:
                live.update(render(rows, namespace), refresh=True)
            else:
                console.print(render(rows, namespace))
                console.file.flush()
            if on_render is not None:
                on_render(rows)
            if not changed:
                await anyio.sleep_forever()
            await _wait_any(changed)


@click.command("watch")
@click.argument("kinds", nargs=-1)
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace.")
@click.option("--once", is_flag=True, help="Print the table once and exit.")
def watch_cmd(kinds: tuple[str, ...], all_namespaces: bool, once: bool) -> None:
    """Live table of primitives (holders, waiters, phase), redrawn on every change.

    KINDS limits it to some kinds (semaphore, mutex, rwmutex, lease, barrier, gate, once,
    waitgroup, or their short names); default all. Ctrl-C to quit (exit 0).
    """
    resources = [_objects.resource_for(k) for k in kinds] or list(_objects.KINDS.values())
    try:
        _app.run_async(lambda: _watch(resources, all_namespaces, once))
    except Interrupted as exc:
        if exc.signum != signal.SIGINT:
            raise
        # Ctrl-C is how one leaves a live view, not an error (kubectl get -w alike).


async def _watch(resources: Sequence[ResourceKind], all_namespaces: bool, once: bool) -> None:
    cfg = _app.settings()
    async with _app.open_client(cfg) as client:
        namespace = None if all_namespaces else client.namespace
        if once:
            served = await served_kinds(client, resources, namespace)
            rows = []
            for kind in served:
                listed = await client.store.list(kind, namespace)
                rows += [
                    _objects.row(o)
                    for o in sorted(listed.items, key=lambda o: (o.namespace, o.name))
                ]
            _output.emit(rows, cfg.output, lambda r: render(r, namespace))
            return
        await watch_view(client, resources, namespace, console=_output.stdout_console())

"""``koncli watch``: a live table of the primitives in a namespace.

Driven by the client's shared watches (one per kind, list-then-watch, the same cache the
primitives wait on): the table is redrawn when an object changes and never otherwise, so
an idle namespace costs no requests. Kinds whose CRD the cluster does not serve are left
out. ``--once`` prints the table (or JSON/YAML rows) a single time, for scripts.

The waiters of the semaphore family and of leases are Claims: when such a kind is shown,
the claims of the namespace are watched too (one more shared watch, not one per object),
and a change of the queue redraws the table like a change of an object.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import click
from rich.console import Console, RenderableType
from rich.live import Live

from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.objects import CLAIM, KObject, ResourceKind

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


def queued(kinds: Sequence[ResourceKind]) -> bool:
    """Whether any of ``kinds`` keeps its waiters in Claims."""
    return any(k.kind in _objects.QUEUED_KINDS for k in kinds)


def rows_of(
    objects: Sequence[KObject], claims: Mapping[_objects.TargetKey, Sequence[KObject]]
) -> list[dict[str, Any]]:
    """Rows for ``objects`` (of one kind), ordered by namespace and name."""
    return [
        _objects.row(obj, claims.get(_objects.target_of(obj), ()))
        for obj in sorted(objects, key=lambda o: (o.namespace, o.name))
    ]


def snapshot(watches: Sequence[KindWatch], claims: KindWatch | None = None) -> list[dict[str, Any]]:
    """Rows for every cached object, ordered by kind (as in ``KINDS``), namespace, name;
    ``claims``: the watch of the claims, for the waiters of the kinds queued in them."""
    by_target = _objects.claims_by_target(claims.objects()) if claims is not None else {}
    rows = []
    for watch in watches:
        rows += rows_of(list(watch.objects()), by_target)
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
    served = await served_kinds(client, kinds, namespace)
    watches = [await client.watch(k, namespace) for k in served]
    claims = None
    if queued(served) and await served_kinds(client, [CLAIM], namespace):
        claims = await client.watch(CLAIM, namespace)
    everything = [*watches, *([claims] if claims is not None else [])]
    # On a terminal the table is redrawn in place; into a pipe or a log (where rich's Live
    # would print nothing until the end) each change appends a new table.
    live = Live(console=console, auto_refresh=False, redirect_stderr=False)
    with live if console.is_terminal else contextlib.nullcontext():
        while True:
            # Take the events before reading the caches: a change in between still wakes us.
            changed = [w.next_any_change() for w in everything]
            rows = snapshot(watches, claims)
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
    waitgroup, or their short names); default all of these. Sessions and claims are shown
    only when named (session, claim). Ctrl-C to quit (exit 0).
    """
    resources = [_objects.resource_for(k) for k in kinds] or [
        rk for name, rk in _objects.KINDS.items() if name not in _objects.RECORD_KINDS
    ]
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
                claims = await _generic.claims_of_kind(client, kind, namespace)
                rows += rows_of(listed.items, claims)
            _output.emit(rows, cfg.output, lambda r: render(r, namespace))
            return
        await watch_view(client, resources, namespace, console=_output.stdout_console())

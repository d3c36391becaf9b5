"""``get``, ``list`` and ``delete``: the same for every kind, straight through the store.

They need no primitive-specific code (the CRD schema is the contract), so they work for
every kind the cluster serves. ``get -o json|yaml`` prints the object as the API server has
it, without ``metadata.managedFields`` (as kubectl); ``list -o json|yaml`` prints a ``kind:
List``, which ``koncli create -f`` accepts back.

The text views of the kinds queued in Claims (the semaphore family, leases) read the
claims too: ``get`` those of its object (field-selected), ``list`` one LIST per namespace
and kind, grouped by target, never one per object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from konductor_sdk._kernel.errors import ConfigurationError, NotFoundError
from konductor_sdk._kernel.objects import KObject, ResourceKind

from . import _app, _objects, _output
from ._complete import complete_names
from ._exitcodes import CliError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from konductor_sdk import Client


async def claims_of(client: Client, obj: KObject) -> list[KObject]:
    """The claims naming ``obj`` if its kind queues in Claims (else none), in service order."""
    if str(obj.raw.get("kind", "")) not in _objects.QUEUED_KINDS:
        return []
    from konductor_sdk._kernel.claims import target_selector

    resource = _objects.resource_for(str(obj.raw.get("kind")))
    found = await _list_claims(client, obj.namespace, target_selector(resource, obj.name))
    return found.get(_objects.target_of(obj), [])


async def claims_of_kind(
    client: Client, resource: ResourceKind, namespace: str | None
) -> Mapping[_objects.TargetKey, list[KObject]]:
    """The claims naming objects of ``resource`` in ``namespace`` (``None``: everywhere),
    grouped by target: one LIST, whatever the number of objects."""
    if resource.kind not in _objects.QUEUED_KINDS:
        return {}
    return await _list_claims(client, namespace, f"spec.target.kind={resource.kind}")


async def _list_claims(
    client: Client, namespace: str | None, selector: str
) -> dict[_objects.TargetKey, list[KObject]]:
    from konductor_sdk._kernel.objects import CLAIM

    try:
        listed = await client.store.list(CLAIM, namespace, field_selector=selector)
    except NotFoundError:  # no Claim CRD: nothing can be queued
        return {}
    return _objects.claims_by_target(listed.items)


def render_object(obj: KObject, claims: Sequence[KObject] = ()) -> RenderableType:
    """Human view of one object: header, spec, scalar status, one table per entry map, and
    the queue (``claims`` naming it, for the kinds queued in Claims) in service order."""
    from rich.console import Group

    maps = _objects.entry_maps(obj)
    parts: list[RenderableType] = [
        f"{obj.raw.get('kind')} {obj.namespace}/{obj.name}  "
        f"(generation {obj.generation}, resourceVersion {obj.resource_version})",
        _output.kv_table(dict(obj.spec) or {"(empty)": None}, title="spec"),
    ]
    scalars = {k: v for k, v in obj.status.items() if k not in maps}
    if scalars:
        parts.append(_output.kv_table(scalars, title="status"))
    for name, entries in maps.items():
        if entries:
            parts.append(_output.entries_table(f"{name} ({len(entries)})", entries))
    waiting = _objects.waiter_rows(obj, claims)
    if waiting:
        parts.append(_output.entries_table(f"waiters ({len(waiting)}, in service order)", waiting))
    return Group(*parts)


def list_table(
    rows: Sequence[dict[str, Any]], *, title: str | None = None, namespaces: bool = False
) -> RenderableType:
    """KIND [NAMESPACE] NAME PHASE HOLDERS WAITERS SUMMARY; the NAMESPACE column only when
    the rows span namespaces (``-A``), as kubectl does."""
    columns = ["KIND", *(["NAMESPACE"] if namespaces else []), "NAME"]
    columns += ["PHASE", "HOLDERS", "WAITERS", "SUMMARY"]
    return _output.table(
        columns,
        (
            [
                r["kind"],
                *([r["namespace"]] if namespaces else []),
                r["name"],
                r["phase"] or "-",
                ",".join(r["holders"]) or "-",
                r["waiters"],
                r["summary"],
            ]
            for r in rows
        ),
        title=title,
    )


def name_argument(kind: str, **kwargs: Any) -> Callable[[Any], Any]:
    return click.argument("name", shell_complete=complete_names(kind), **kwargs)


def get_command(kind: str, resource: ResourceKind) -> click.Command:
    @click.command("get")
    @name_argument(kind)
    @_app.async_command
    async def get(name: str) -> None:
        """Show one object (the full object with -o json/yaml)."""
        cfg = _app.settings()
        async with _app.open_client(cfg) as client:
            obj = await client.store.get(resource, client.namespace, name)
            claims = await claims_of(client, obj) if cfg.output == "text" else []
        _output.emit(_objects.for_output(obj.raw), cfg.output, lambda _: render_object(obj, claims))

    return get


def list_command(kind: str, resource: ResourceKind) -> click.Command:
    @click.command("list")
    @click.option("-l", "--selector", help="Label selector, e.g. team=ml,tier!=batch.")
    @click.option("-A", "--all-namespaces", is_flag=True, help="List in every namespace.")
    @_app.async_command
    async def list_(selector: str | None, all_namespaces: bool) -> None:
        """List objects with their holders, waiters and phase."""
        cfg = _app.settings()
        async with _app.open_client(cfg) as client:
            namespace = None if all_namespaces else client.namespace
            listed = await client.store.list(resource, namespace, label_selector=selector)
            text = cfg.output == "text"
            claims = await claims_of_kind(client, resource, namespace) if text else {}
        objects = sorted(listed.items, key=lambda o: (o.namespace, o.name))
        if text:
            rows = [_objects.row(o, claims.get(_objects.target_of(o), ())) for o in objects]
            _output.emit(None, "text", lambda _: list_table(rows, namespaces=all_namespaces))
        else:
            items = [_objects.for_output(o.raw) for o in objects]
            _output.emit({"apiVersion": "v1", "kind": "List", "items": items}, cfg.output)

    return list_


async def delete_many(
    resource: ResourceKind,
    names: Sequence[str],
    selector: str | None,
    *,
    ignore_not_found: bool,
) -> list[dict[str, Any]]:
    """Delete ``names`` and/or what ``selector`` matches; one result row per object."""
    cfg = _app.settings()
    async with _app.open_client(cfg) as client:
        targets = list(names)
        if selector is not None:
            listed = await client.store.list(resource, client.namespace, label_selector=selector)
            targets += [o.name for o in listed.items if o.name not in targets]
        rows = []
        for name in targets:
            row = {
                "kind": _objects.cli_name(resource.kind),
                "namespace": client.namespace,
                "name": name,
            }
            try:
                await client.store.delete(resource, client.namespace, name)
                row |= {"result": "deleted", "message": ""}
            except NotFoundError as exc:
                row |= {"result": "ok" if ignore_not_found else "failed", "message": str(exc)}
                if ignore_not_found:
                    row["message"] = "not found"
            except Exception as exc:  # one bad item must not stop the others
                row |= {"result": "failed", "message": str(exc)}
            rows.append(row)
    return rows


def results_table(rows: Sequence[dict[str, Any]]) -> RenderableType:
    """KIND NAMESPACE NAME [KEY] RESULT MESSAGE, one row per item."""
    keyed = any("key" in r for r in rows)
    columns = ["KIND", "NAMESPACE", "NAME", *(["KEY"] if keyed else []), "RESULT", "MESSAGE"]
    return _output.table(
        columns,
        (
            [
                r["kind"],
                r.get("namespace", ""),
                r["name"],
                *([r.get("key", "")] if keyed else []),
                r["result"],
                r["message"] or "",
            ]
            for r in rows
        ),
    )


def emit_results(rows: Sequence[dict[str, Any]]) -> None:
    """Print a per-item result table; exit 1 if any item failed."""
    _output.emit(list(rows), _app.output_format(), lambda _: results_table(rows))
    if any(r["result"] == "failed" for r in rows):
        raise click.exceptions.Exit(1)


def delete_command(kind: str, resource: ResourceKind) -> click.Command:
    @click.command("delete")
    @click.argument("names", nargs=-1, shell_complete=complete_names(kind))
    @click.option("-l", "--selector", help="Delete every object matching this label selector.")
    @click.option("--ignore-not-found", is_flag=True, help="A missing object is not an error.")
    @_app.async_command
    async def delete(names: tuple[str, ...], selector: str | None, ignore_not_found: bool) -> None:
        """Delete objects by name and/or label selector (a result row per object).

        Holders lose their permits: their renewals fail and their `async with` bodies are
        cancelled. Exit 1 if any deletion failed.
        """
        if not names and selector is None:
            raise ConfigurationError("give NAMES and/or --selector")
        rows = await delete_many(resource, names, selector, ignore_not_found=ignore_not_found)
        if len(rows) == 1 and not selector:
            row = rows[0]
            if row["result"] == "failed":
                raise CliError(row["message"])
            _output.emit(row, _app.output_format(), lambda r: f"{kind} {r['name']} {r['result']}")
            return
        emit_results(rows)

    return delete


def generic_commands(kind: str) -> list[tuple[str, click.Command]]:
    """``get``, ``list`` and ``delete`` for ``kind``, by name."""
    resource = _objects.KINDS[kind]
    return [
        (name, factory(kind, resource))
        for name, factory in (
            ("get", get_command),
            ("list", list_command),
            ("delete", delete_command),
        )
    ]

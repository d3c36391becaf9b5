"""Bulk operations: create, delete or release many objects in one command.

Input is a YAML or JSON file (``-`` for stdin) of Kubernetes-style manifests — several
YAML documents, a JSON/YAML list, or a ``kind: List`` (what ``koncli <kind> list -o yaml``
prints) — or, for delete/release, a kind and a label selector. The whole input is
validated before the first write, so a typo fails with exit 2 and nothing half-done;
after that every item is attempted and reported in a result table (exit 1 if any failed).

``create`` is all or nothing: after the local checks (names, kinds, a Gate's condition
tree and CEL) the API server dry-runs every item (``dryRun=All``, ``fieldValidation=
Strict``: schema, unknown fields, admission policies, RBAC, existing names) and nothing
is created unless every item passed. Gates get ``spec.creator`` (who is writing, as the
API server authenticates us), which deploy/'s gate-creator policy requires. The server's
``Warning`` headers are shown on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, final

import attrs
import click
import yaml

from konductor_sdk._kernel.errors import AlreadyExistsError, ConfigurationError, NotFoundError
from konductor_sdk._kernel.names import check_namespace, check_object_name
from konductor_sdk._kernel.objects import GATE, GROUP, VERSION, ResourceKind

from . import _app, _generic, _objects, _output
from ._exitcodes import CliError

API_VERSION: Final = f"{GROUP}/{VERSION}"


@final
@attrs.frozen
class Item:
    """One object named by the input."""

    resource: ResourceKind
    name: str
    namespace: str | None
    body: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return _objects.cli_name(self.resource.kind) or self.resource.kind


def read_documents(source: str) -> list[Any]:
    """Every document of a YAML/JSON file (``-``: stdin).

    Raises:
        ConfigurationError: unreadable or not YAML/JSON.
    """
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"-f {source!r}: {exc.strerror}") from exc
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"-f {source!r} is not valid YAML/JSON: {exc}") from exc


def flatten(documents: Sequence[Any]) -> list[Any]:
    """Lists and ``kind: List`` documents become their items."""
    out: list[Any] = []
    for doc in documents:
        if isinstance(doc, list):
            out += flatten(doc)
        elif isinstance(doc, Mapping) and doc.get("kind") == "List":
            out += flatten(list(doc.get("items") or []))
        else:
            out.append(doc)
    return out


def parse_items(documents: Sequence[Any], *, source: str) -> list[Item]:
    """Validate manifests; every problem names the item's position and field.

    Raises:
        ConfigurationError: not a mapping, unknown kind/apiVersion, bad name, duplicate.
    """
    items: list[Item] = []
    seen: set[tuple[str, str | None, str]] = set()
    for index, doc in enumerate(flatten(documents), start=1):
        where = f"{source} item {index}"
        if not isinstance(doc, Mapping):
            raise ConfigurationError(f"{where}: must be a mapping, got {type(doc).__name__}")
        api_version = doc.get("apiVersion", API_VERSION)
        if api_version != API_VERSION:
            raise ConfigurationError(
                f"{where}: apiVersion must be {API_VERSION}, got {api_version!r}"
            )
        kind = doc.get("kind")
        if not isinstance(kind, str):
            raise ConfigurationError(f"{where}: kind is missing")
        resource = _objects.resource_for(kind)
        metadata = doc.get("metadata")
        if not isinstance(metadata, Mapping):
            raise ConfigurationError(f"{where}: metadata is missing")
        name = check_object_name(metadata.get("name"), field=f"{where}: metadata.name")
        namespace = metadata.get("namespace")
        if namespace is not None:
            check_namespace(namespace, field=f"{where}: metadata.namespace")
        key = (resource.kind, namespace, name)
        if key in seen:
            raise ConfigurationError(f"{where}: {kind} {name} appears twice")
        seen.add(key)
        # Every kind's CRD requires spec, even those without settings (Mutex).
        body = {
            "spec": {},
            **_objects.manifest(doc),
            "apiVersion": API_VERSION,
            "kind": resource.kind,
        }
        if resource == GATE:
            check_gate_spec(body["spec"], where=f"{where} (Gate {name})")
        items.append(Item(resource, name, namespace, body))
    if not items:
        raise ConfigurationError(f"{source}: no objects found")
    return items


def check_gate_spec(spec: Any, *, where: str) -> None:
    """What ``Gate.create`` checks before writing: the condition tree and its CEL (the
    API server's schema cannot compile CEL, so a typo would only surface in status).

    Raises:
        ConfigurationError: naming the item and the field path.
    """
    from konductor_sdk._kernel.cel_eval import check_expression
    from konductor_sdk._machines.gate_spec import parse_spec

    try:
        for leaf in parse_spec(spec).leaves:
            if leaf.type == "object":
                try:
                    check_expression(str(leaf.params["expression"]))
                except ConfigurationError as exc:
                    raise ConfigurationError(f"{leaf.path}.object.{exc}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _row(
    item: Item,
    namespace: str,
    result: str,
    message: str = "",
    warnings: Sequence[str] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": item.kind,
        "namespace": namespace,
        "name": item.name,
        "result": result,
        "message": message,
    }
    if warnings is not None:  # create: the server's warnings about the item
        row["warnings"] = list(warnings)
    return row


async def create_items(items: Sequence[Item], *, skip_existing: bool) -> list[dict[str, Any]]:
    """Dry-run every item, then create them all — or none, if any item was refused."""
    from konductor_sdk._kernel.store import KubeStore
    from konductor_sdk.gate import whoami

    cfg = _app.settings()
    async with _app.open_client(cfg) as client:
        store = client.store
        if not isinstance(store, KubeStore):  # pragma: no cover - koncli always has one
            raise CliError("koncli create needs a real API server (dry run)")
        creator = await whoami(client) if any(i.resource == GATE for i in items) else None
        bodies = [_body(item, client.namespace, creator) for item in items]

        # 1. The server checks every item without storing anything.
        checked: list[tuple[str, str, list[str]]] = []  # (outcome, message, warnings)
        for item, (namespace, body) in zip(items, bodies, strict=True):
            warnings: list[str] = []
            try:
                await store.create(
                    item.resource,
                    namespace,
                    body,
                    dry_run=True,
                    field_validation="Strict",
                    warnings=warnings,
                )
                checked.append(("ok", "", warnings))
            except AlreadyExistsError:
                checked.append(("exists", "already exists", warnings))
            except Exception as exc:  # reported per item below; nothing is written
                checked.append(("refused", str(exc), warnings))
        for item, (namespace, _), (_, _, warnings) in zip(items, bodies, checked, strict=True):
            for text in warnings:
                _output.message(f"koncli: warning: {item.kind} {namespace}/{item.name}: {text}")
        refused = [
            (i, c)
            for i, c in enumerate(checked)
            if c[0] == "refused" or (c[0] == "exists" and not skip_existing)
        ]
        if refused:
            first = refused[0][0] + 1
            rows = []
            for item, (namespace, _), (outcome, message, warnings) in zip(
                items, bodies, checked, strict=True
            ):
                if outcome == "ok" or (outcome == "exists" and skip_existing):
                    message = f"not created: item {first} was refused (dry run passed)"
                rows.append(_row(item, namespace, "failed", message, warnings))
            return rows

        # 2. Every item passed: create them (a writer racing us can still make one fail).
        rows = []
        for item, (namespace, body), (outcome, _, seen) in zip(items, bodies, checked, strict=True):
            if outcome == "exists":
                rows.append(_row(item, namespace, "unchanged", "already exists", seen))
                continue
            warnings = []
            try:
                await store.create(
                    item.resource, namespace, body, field_validation="Strict", warnings=warnings
                )
                rows.append(_row(item, namespace, "created", "", seen))
            except Exception as exc:  # one item lost a race: report it, go on
                rows.append(_row(item, namespace, "failed", str(exc), seen))
            for text in warnings:
                if text not in seen:
                    _output.message(f"koncli: warning: {item.kind} {namespace}/{item.name}: {text}")
    return rows


def _body(
    item: Item, default_namespace: str, creator: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    namespace = item.namespace or default_namespace
    body = dict(item.body)
    body["metadata"] = {**body["metadata"], "namespace": namespace}
    if item.resource == GATE:
        # deploy/'s gate-creator policy admits a Gate spec only if spec.creator is its
        # writer: record ourselves (replacing whatever the file said, e.g. from get -o yaml).
        spec = {k: v for k, v in dict(body.get("spec") or {}).items() if k != "creator"}
        if creator is not None:
            spec["creator"] = dict(creator)
        body["spec"] = spec
    return namespace, body


async def delete_items(items: Sequence[Item], *, ignore_not_found: bool) -> list[dict[str, Any]]:
    cfg = _app.settings()
    rows = []
    async with _app.open_client(cfg) as client:
        for item in items:
            namespace = item.namespace or client.namespace
            try:
                await client.store.delete(item.resource, namespace, item.name)
                rows.append(_row(item, namespace, "deleted"))
            except NotFoundError:
                result = "unchanged" if ignore_not_found else "failed"
                rows.append(_row(item, namespace, result, "not found"))
            except Exception as exc:  # one bad item must not stop the others
                rows.append(_row(item, namespace, "failed", str(exc)))
    return rows


def results(rows: Sequence[dict[str, Any]]) -> None:
    """Print the per-item table (or JSON/YAML list); exit 1 if any item failed."""
    _generic.emit_results(rows)


@click.command("create")
@click.option(
    "-f",
    "--filename",
    "source",
    required=True,
    metavar="FILE",
    help="YAML/JSON manifests ('-' for stdin).",
)
@click.option("--skip-existing", is_flag=True, help="An existing object is not an error.")
@_app.async_command
async def create_cmd(source: str, skip_existing: bool) -> None:
    """Create every object in FILE, all or nothing; print a result per object.

    Every item is checked first (locally, then by a server-side dry run: schema, unknown
    fields, admission policies, RBAC, existing names); if any is refused, nothing is
    created. Gates record you as spec.creator. Server warnings go to stderr.

    \b
    apiVersion: sync.konductor.io/v1alpha1
    kind: Semaphore
    metadata: {name: gpu-pool, labels: {team: ml}}
    spec: {permits: 4}
    ---
    kind: Barrier
    metadata: {name: stage1}
    spec: {expected: 8}
    """
    items = parse_items(read_documents(source), source=source)
    results(await create_items(items, skip_existing=skip_existing))


@click.command("delete")
@click.argument("kind", required=False)
@click.option("-f", "--filename", "source", metavar="FILE", help="Delete the objects in FILE.")
@click.option("-l", "--selector", help="With KIND: delete every object matching the selector.")
@click.option("--ignore-not-found", is_flag=True, help="A missing object is not an error.")
@_app.async_command
async def delete_cmd(
    kind: str | None, source: str | None, selector: str | None, ignore_not_found: bool
) -> None:
    """Delete the objects in FILE, or every KIND object matching --selector.

    \b
    koncli delete -f pipeline.yaml
    koncli delete semaphore -l team=ml
    """
    if (source is None) == (kind is None):
        raise ConfigurationError("give either -f FILE or KIND --selector SELECTOR")
    if source is not None:
        items = parse_items(read_documents(source), source=source)
        results(await delete_items(items, ignore_not_found=ignore_not_found))
        return
    assert kind is not None
    if selector is None:
        raise ConfigurationError("KIND needs --selector (use 'koncli <kind> delete NAME...')")
    resource = _objects.resource_for(kind)
    results(await _generic.delete_many(resource, (), selector, ignore_not_found=ignore_not_found))


@final
@attrs.frozen
class Release:
    """One entry to remove: ``who`` is an acquisition key or a holder id."""

    kind: str
    name: str
    namespace: str | None
    who: str


RELEASABLE: Final = ("semaphore", "mutex", "rwmutex", "lease")


def parse_releases(documents: Sequence[Any], *, source: str) -> list[Release]:
    """Records ``{kind, name, key}`` (or ``holder`` instead of ``key``; ``namespace``
    optional), as printed by ``koncli <kind> acquire -o json``.

    Raises:
        ConfigurationError: a record without kind/name/key, or a kind without holders.
    """
    out = []
    for index, doc in enumerate(flatten(documents), start=1):
        where = f"{source} item {index}"
        if not isinstance(doc, Mapping):
            raise ConfigurationError(f"{where}: must be a mapping, got {type(doc).__name__}")
        kind = _objects.cli_name(_objects.resource_for(str(doc.get("kind", ""))).kind)
        if kind not in RELEASABLE:
            raise ConfigurationError(
                f"{where}: kind must be one of {', '.join(RELEASABLE)}, got {doc.get('kind')!r}"
            )
        name = check_object_name(doc.get("name"), field=f"{where}: name")
        who = doc.get("key") or doc.get("holder")
        if not isinstance(who, str) or not who:
            raise ConfigurationError(f"{where}: needs key (or holder)")
        namespace = doc.get("namespace")
        out.append(Release(kind, name, str(namespace) if namespace else None, who))
    if not out:
        raise ConfigurationError(f"{source}: no records found")
    return out


async def release_all(
    releases: Sequence[Release],
    *,
    selector: tuple[str, str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """Release each record; with ``selector=(kind, labels, holder)`` first expand it into
    records for every holder (or only ``holder``) of every matching object."""
    from . import _sdk

    cfg = _app.settings()
    rows: list[dict[str, Any]] = []
    async with _app.open_client(cfg) as client:
        todo = list(releases)
        if selector is not None:
            kind, labels, holder = selector
            resource = _objects.resource_for(kind)
            listed = await client.store.list(resource, client.namespace, label_selector=labels)
            for obj in sorted(listed.items, key=lambda o: o.name):
                keys = [
                    k
                    for k, who in _objects.release_keys(obj).items()
                    if holder is None or who == holder
                ]
                todo += [Release(kind, obj.name, obj.namespace, k) for k in sorted(keys)]
        for rel in todo:
            namespace = rel.namespace or client.namespace
            row = {"kind": rel.kind, "namespace": namespace, "name": rel.name, "key": rel.who}
            try:
                removed = await _sdk.force_release(client, rel.kind, namespace, rel.name, rel.who)
            except Exception as exc:  # one bad item must not stop the others
                rows.append(row | {"result": "failed", "message": str(exc)})
                continue
            if removed:
                rows.append(row | {"result": "released", "message": ", ".join(removed)})
            else:
                rows.append(row | {"result": "failed", "message": "no such holder"})
    return rows


@click.command("release")
@click.argument("kind", required=False)
@click.option("-f", "--filename", "source", metavar="FILE", help="Release the records in FILE.")
@click.option("-l", "--selector", help="With KIND: objects matching this label selector.")
@click.option("--holder", default=None, help="With --selector: only this holder id's entries.")
@click.option("--all-holders", is_flag=True, help="With --selector: every holder's entries.")
@_app.async_command
async def release_cmd(
    kind: str | None,
    source: str | None,
    selector: str | None,
    holder: str | None,
    all_holders: bool,
) -> None:
    """Release many permits: records in FILE, or holders of KIND objects by selector.

    \b
    koncli semaphore acquire gpu --ttl 600 -o json >> held.json
    koncli release -f held.json
    koncli release semaphore -l team=ml --holder trainer-0:5c1f...
    koncli release mutex -l pipeline=nightly --all-holders

    The holders, if still running, see their permits lost.
    """
    if (source is None) == (kind is None):
        raise ConfigurationError("give either -f FILE or KIND --selector SELECTOR")
    if source is not None:
        releases = parse_releases(read_documents(source), source=source)
        results(await release_all(releases))
        return
    assert kind is not None
    cli_kind = _objects.cli_name(_objects.resource_for(kind).kind)
    if cli_kind not in RELEASABLE:
        raise ConfigurationError(f"KIND must be one of {', '.join(RELEASABLE)}, got {kind!r}")
    if selector is None:
        raise ConfigurationError("KIND needs --selector")
    if (holder is None) == (not all_holders):
        raise ConfigurationError("give exactly one of --holder ID or --all-holders")
    rows = await release_all([], selector=(cli_kind, selector, holder))
    if not rows:
        raise CliError(f"no {cli_kind} holders matched --selector {selector!r}")
    results(rows)

"""Kind table and human summaries of objects, shared by ``get``, ``list`` and ``watch``.

Summaries come from each kind's own :class:`~konductor_sdk._machines.rules.KindRules` (the same
``describe`` the operator puts in Events), so koncli never re-implements a primitive's
bookkeeping; entry maps (holders, arrivals...) are counted generically.

The waiters of the semaphore family and the candidates of a lease are not in the object at
all: each is a ``Claim`` naming it (docs/design.md). Callers fetch the claims (one LIST or
watch per namespace, grouped here by :func:`claims_by_target`) and pass each object's own.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from konductor_sdk._kernel import objects as _store
from konductor_sdk._kernel.objects import KObject, ResourceKind

from ._kinds import aliases

if TYPE_CHECKING:
    from konductor_sdk._machines.rules import KindRules

# CLI name -> resource, in the order ``watch`` shows them.
KINDS: Final[Mapping[str, ResourceKind]] = {
    "semaphore": _store.SEMAPHORE,
    "mutex": _store.MUTEX,
    "rwmutex": _store.RWMUTEX,
    "lease": _store.LEASE,
    "barrier": _store.BARRIER,
    "gate": _store.GATE,
    "once": _store.ONCE,
    "waitgroup": _store.WAITGROUP,
    "session": _store.SESSION,
    "claim": _store.CLAIM,
}
_BY_KIND: Final = {rk.kind: name for name, rk in KINDS.items()}
RECORD_KINDS: Final = frozenset({"session", "claim"})
"""Bookkeeping records, not primitives: ``watch`` shows them only when asked to (a thousand
waiters are a thousand claims, already counted in their primitive's WAITERS)."""
_WAITER_MAPS: Final = ("waiters", "queue", "readWaiters", "writeWaiters")
QUEUED_KINDS: Final = frozenset(
    rk.kind for rk in (_store.SEMAPHORE, _store.MUTEX, _store.RWMUTEX, _store.LEASE)
)
"""Kinds whose waiters are Claims (a queued request, a lease candidate); a Barrier's claims
are batches of arrivals, not waiters."""

TargetKey = tuple[str, str, str]
"""``(namespace, Kind, name)`` of a claim's target."""


def cli_name(kind: str) -> str | None:
    """``"Semaphore"`` -> ``"semaphore"``; ``None`` for a kind koncli does not know."""
    return _BY_KIND.get(kind)


def resource_for(name: str) -> ResourceKind:
    """The resource of a CLI kind name, its plural, a CRD short name, or its ``Kind`` (any
    case)."""
    lowered = name.lower()
    for cli, rk in KINDS.items():
        if lowered in (cli, rk.plural, rk.kind.lower()):
            return rk
    kind = aliases().get(lowered)
    if kind is not None:
        return KINDS[kind]
    from konductor_sdk._kernel.errors import ConfigurationError

    raise ConfigurationError(f"unknown kind {name!r} (allowed: {', '.join(KINDS)})")


@functools.cache
def _rules() -> dict[str, KindRules]:
    from konductor_sdk._machines.rules import registered

    try:
        return registered()
    except Exception:  # a half-written primitive module must not break inspection
        return {}


def entry_maps(obj: KObject) -> dict[str, Mapping[str, Any]]:
    """The status maps of TTL entries (by the kind's rules; else every map of mappings)."""
    rules = _rules().get(str(obj.raw.get("kind", "")))
    status = obj.status
    if rules is not None:
        names: Sequence[str] = rules.entry_maps
    else:
        names = [
            k
            for k, v in status.items()
            if isinstance(v, Mapping) and v and all(isinstance(e, Mapping) for e in v.values())
        ]
    return {n: status[n] for n in names if isinstance(status.get(n), Mapping)}


def holders(obj: KObject) -> list[str]:
    """Holder ids currently recorded (``status.holders`` entries, else ``status.holder``)."""
    entries = entry_maps(obj).get("holders")
    if entries:
        return [str(e.get("holder", key)) for key, e in entries.items()]
    single = obj.status.get("holder")
    return [single] if isinstance(single, str) and single else []


def target_of(obj: KObject) -> TargetKey:
    return (obj.namespace, str(obj.raw.get("kind", "")), obj.name)


def claims_by_target(claims: Iterable[KObject]) -> dict[TargetKey, list[KObject]]:
    """Live claims grouped by the object they name, each group in service order."""
    from konductor_sdk._kernel.claims import order_key

    out: dict[TargetKey, list[KObject]] = {}
    for claim in sorted(claims, key=order_key):
        target = claim.spec.get("target")
        if claim.deleting or not isinstance(target, Mapping):
            continue
        key = (claim.namespace, str(target.get("kind", "")), str(target.get("name", "")))
        out.setdefault(key, []).append(claim)
    return out


def queue(obj: KObject, claims: Sequence[KObject]) -> list[KObject]:
    """The waiting claims of ``obj`` (of a :data:`QUEUED_KINDS` kind) in service order: its
    ``claims`` minus those a holder entry names (granted, not yet deleted by their owner)."""
    if str(obj.raw.get("kind", "")) not in QUEUED_KINDS:
        return []
    entries = entry_maps(obj).get("holders") or {}
    granted = {e.get("claim") for e in entries.values() if isinstance(e, Mapping)}
    return [c for c in claims if c.name not in granted and not c.deleting]


def waiters(obj: KObject, claims: Sequence[KObject] = ()) -> int:
    """How many wait: the queue of ``claims`` for the kinds queued in Claims, else the
    entry maps of waiters a kind keeps in its status."""
    if str(obj.raw.get("kind", "")) in QUEUED_KINDS:
        return len(queue(obj, claims))
    maps = entry_maps(obj)
    return sum(len(maps[name]) for name in _WAITER_MAPS if name in maps)


def waiter_rows(obj: KObject, claims: Sequence[KObject]) -> dict[str, dict[str, Any]]:
    """The queue of ``obj`` as an entry map for a table: claim name -> what it asks for."""
    fields = ("holder", "weight", "priority", "mode", "preemptible", "allowBurst", "session")
    out: dict[str, dict[str, Any]] = {}
    for claim in queue(obj, claims):
        row = {f: claim.spec[f] for f in fields if f in claim.spec}
        pod = claim.spec.get("pod")
        if isinstance(pod, Mapping) and pod.get("name"):
            row["pod"] = pod["name"]
        out[claim.name] = row
    return out


def release_keys(obj: KObject) -> dict[str, str]:
    """Each holder entry's release key -> its holder id. For the semaphore family the key
    is ``slot#token`` (the map's own key is only the first slot, which a later grant may
    reuse: the token pins the very grant that was listed)."""
    entries = entry_maps(obj).get("holders") or {}
    semaphores = str(obj.raw.get("kind", "")) in QUEUED_KINDS - {_store.LEASE.kind}
    out = {}
    for key, entry in entries.items():
        if not isinstance(entry, Mapping):
            continue
        token = entry.get("token")
        release = f"{key}#{token}" if semaphores and token is not None else str(key)
        out[release] = str(entry.get("holder", ""))
    return out


def phase(obj: KObject) -> str:
    """``status.phase``; before the first status write (a fresh object), the phase the
    kind's own ``normalize`` derives from the spec (``Ready``, ``Waiting``, ``Pending``...)."""
    value = obj.status.get("phase")
    if value:
        return str(value)
    if obj.deleting:
        return "Deleting"
    rules = _rules().get(str(obj.raw.get("kind", "")))
    if rules is None:
        return ""
    try:
        derived = rules.normalize(obj.spec, copy.deepcopy(dict(obj.status))).get("phase")
    except Exception:  # a malformed object: no phase rather than no table
        return ""
    return str(derived or "")


def summary(obj: KObject) -> str:
    """One line about ``obj``: the kind's own ``describe``, else its entry counts."""
    rules = _rules().get(str(obj.raw.get("kind", "")))
    if rules is not None and rules.describe is not None:
        try:
            return rules.describe(obj)
        except Exception:  # describe() on a malformed object: fall back to counts
            pass
    counts = [f"{name}={len(entries)}" for name, entries in entry_maps(obj).items()]
    spec = [f"{k}={v}" for k, v in obj.spec.items() if isinstance(v, int | str | float)]
    return " ".join(spec + counts)


def row(obj: KObject, claims: Sequence[KObject] = ()) -> dict[str, Any]:
    """The fields of one line of ``list``/``watch`` (also their JSON shape); ``claims``:
    those naming ``obj`` (see :func:`claims_by_target`)."""
    return {
        "kind": cli_name(str(obj.raw.get("kind", ""))) or obj.raw.get("kind"),
        "namespace": obj.namespace,
        "name": obj.name,
        "phase": phase(obj),
        "holders": holders(obj),
        "waiters": waiters(obj, claims),
        "summary": summary(obj),
    }


_SERVER_FIELDS: Final = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
)


def for_output(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as ``get``/``list -o json|yaml`` print it: without ``metadata.managedFields``
    (server bookkeeping nobody reads, as ``kubectl get -o yaml`` hides it)."""
    out = dict(obj)
    metadata = out.get("metadata")
    if isinstance(metadata, Mapping) and "managedFields" in metadata:
        out["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return out


def manifest(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` stripped of server-owned fields (status, uid, resourceVersion...), so the
    output of ``get -o yaml`` can be fed back to ``koncli create -f``."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    out = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    out["metadata"] = metadata
    return out

"""What the operator needs to know about each kind, registered by the kind's state module.

The operator is generic: for every registered kind it reaps expired entries from the
named entry maps, recomputes aggregates with the kind's own pure ``normalize`` (the same
function the SDK uses on every write, so the two can never disagree), fires timeouts, and
exports gauges. Adding a primitive means registering one :class:`KindRules`; the operator
does not change.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import attrs

from konductor_sdk._kernel.objects import KObject, ResourceKind

Status = dict[str, Any]


@attrs.frozen
class KindRules:
    """How the operator treats one kind.

    Attributes:
        kind: the resource.
        entry_maps: names of ``status`` maps whose values are TTL entries (see
            ``docs/design.md``): ``holders``, ``waiters``, ``arrivals``...
        normalize: ``(spec, status) -> status`` with every derived field (counts, phase,
            available...) recomputed; pure, total, idempotent.
        timer: ``obj -> (episode, seconds)`` if a timeout is running for this object,
            else ``None``. The operator starts its own monotonic stopwatch when it first
            sees an episode key and fires ``on_timeout`` after ``seconds``.
        on_timeout: ``obj -> new status`` (or ``None`` if nothing to do any more).
        gauges: ``obj -> {metric: value}`` for the operator's Prometheus gauges
            (e.g. ``in_use``, ``limit``, ``waiters``, ``arrived``).
        describe: ``obj -> short human summary`` for Events and logs.
        drop_sessions: ``(obj, dead session names, those sessions' claims on obj) -> new
            status`` (or ``None`` if nothing changes), for kinds whose participants are
            more than entries naming a session (a Barrier's arrivals are counters: the
            dead sessions' arrival claims say which index ranges to withdraw). Applied by
            the operator, in its CAS loop, after it has judged the sessions dead; its
            claims are deleted after the write. ``None``: only ``entry_maps`` are reaped.
        claim_counts: ``(status, names of the live claims naming the object) -> {field:
            value}``: status fields counted from Claims (a semaphore's ``queueLength``),
            which no client can know and the operator keeps up to date from the claims it
            watches. ``normalize`` keeps them as found. ``None``: the kind has none.
    """

    kind: ResourceKind
    entry_maps: tuple[str, ...]
    normalize: Callable[[Mapping[str, Any], Status], Status]
    timer: Callable[[KObject], tuple[Hashable, float] | None] | None = None
    on_timeout: Callable[[KObject], Status | None] | None = None
    gauges: Callable[[KObject], Mapping[str, float]] | None = None
    describe: Callable[[KObject], str] | None = None
    sessions_of: Callable[[KObject], frozenset[str]] | None = None
    """Sessions the object names outside its entry maps (a Barrier's recent batches): when
    one ends, the operator calls ``drop_sessions`` even if no claim of it is left."""
    drop_sessions: Callable[[KObject, frozenset[str], Sequence[KObject]], Status | None] | None = (
        None
    )
    claim_counts: Callable[[Mapping[str, Any], AbstractSet[str]], Mapping[str, int]] | None = None
    rebase: Callable[[KObject], Status] | None = None
    """``obj -> status`` that ``normalize`` must start from, for kinds whose conclusions
    belong to one ``metadata.generation`` (a Gate's latch): ``normalize`` sees only the
    spec, so without this the operator would re-derive them from a status written for
    another generation, or drop the generation they were drawn for. ``None``: the stored
    status as it is."""


def base_status(rules: KindRules, obj: KObject) -> Status:
    """A private copy of the status ``rules.normalize`` starts from for ``obj``."""
    if rules.rebase is not None:
        return rules.rebase(obj)
    return copy.deepcopy(dict(obj.status))


_REGISTRY: dict[str, KindRules] = {}


def register(rules: KindRules) -> KindRules:
    """Register (or replace) the rules of ``rules.kind``; returns them for module constants."""
    _REGISTRY[rules.kind.kind] = rules
    return rules


# Every machine module that registers rules, by name: a new kind is added here, and
# ``tests/unit/test_layering.py`` fails if a machine defines ``RULES`` without being listed.
MACHINES: tuple[str, ...] = ("semaphore", "barrier", "lease", "once", "waitgroup", "gate")


def registered() -> dict[str, KindRules]:
    """All rules, after importing every machine module in :data:`MACHINES`."""
    import importlib

    for name in MACHINES:
        importlib.import_module(f"konductor_sdk._machines.{name}")
    return dict(_REGISTRY)

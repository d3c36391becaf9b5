"""Pure state of a Gate: the condition tree, its evaluation and the derived status.

Everything here maps ``(spec, status)`` (plus facts the caller observed and a wall-clock
string for humans) to a new status, without I/O, so the SDK (``mark``, ``wait``), the
operator (evaluating references, timeouts) and hypothesis run the very same code.

The spec is a tree: ``spec.match`` (``all``/``any``) over ``spec.conditions``, where each
condition is a *leaf* of one type (``job``, ``barrier``, ``semaphore``, ``lease``, ``gate``,
``once``, ``waitGroup``, ``object``, ``external``, ``http``) or a ``group`` with its own
``match`` and conditions, at most :data:`MAX_DEPTH` levels deep. Names are unique across the
whole tree. Layout of ``status`` (see ``docs/gate.md``)::

    conditions: [{name, type, met, failed, message, lastTransitionTime,
                  observedGeneration, fingerprint, markedBy}]   # one per leaf
    phase: Waiting|Open|Failed       # derived by normalize()
    met: "2/3"                       # derived: met leaves / leaves
    message                          # derived: what it waits for, or why it failed
    specHash                         # the spec the derived fields were computed for
    specGeneration                   # its metadata.generation (see rebase())
    openedAt, openCount              # derived from the leaves' transition times
    failure: {reason, message, specHash, at}   # terminal while specHash matches
    observedGeneration               # written by the operator

A leaf entry counts only while its ``fingerprint`` equals the hash of the leaf's current
spec, so a status computed for an older spec can never open a gate whose spec changed.
Three-valued logic: a leaf is met, waiting, or *impossible* (``failed``: e.g. the Job
failed); ``all`` is impossible if any child is, ``any`` only if every child is.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Final

import attrs

from konductor_sdk._kernel.clock import SYSTEM_CLOCK, rfc3339
from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.objects import GATE, KObject
from konductor_sdk._machines.gate_spec import (
    GateSpec,
    Group,
    Leaf,
    Spec,
    SpecError,
    parse_spec,
    spec_hash,
)
from konductor_sdk._machines.rules import KindRules, Status, register

WAITING: Final = "Waiting"
OPEN: Final = "Open"
FAILED: Final = "Failed"
TIMEOUT: Final = "Timeout"
CONDITION_FAILED: Final = "ConditionFailed"
INVALID_SPEC: Final = "InvalidSpec"

MAX_MESSAGE: Final = 1024

# -- evaluation ----------------------------------------------------------------------------

MET: Final = "met"
PENDING: Final = "pending"
IMPOSSIBLE: Final = "impossible"


@attrs.frozen
class Verdict:
    """A node's state; ``since`` is when it became so (RFC 3339, for humans); ``blocking``
    names the leaves it waits for (or that made it impossible)."""

    state: str
    since: str | None = None
    blocking: tuple[str, ...] = ()


def trusted_entries(gs: GateSpec, status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Leaf entries of ``status`` evaluated for the current spec of their leaf."""
    prints = {leaf.name: leaf.fingerprint for leaf in gs.leaves}
    out: dict[str, Mapping[str, Any]] = {}
    for entry in status.get("conditions") or ():
        if isinstance(entry, Mapping) and prints.get(str(entry.get("name"))) == entry.get(
            "fingerprint"
        ):
            out[str(entry["name"])] = entry
    return out


def evaluate(node: Leaf | Group, entries: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """Three-valued evaluation of ``node`` over trusted leaf entries."""
    if isinstance(node, Leaf):
        entry = entries.get(node.name)
        since = (
            str(entry["lastTransitionTime"]) if entry and entry.get("lastTransitionTime") else None
        )
        if entry is not None and entry.get("met") is True:
            return Verdict(MET, since)
        if entry is not None and entry.get("failed") is True:
            return Verdict(IMPOSSIBLE, since, (node.name,))
        return Verdict(PENDING, None, (node.name,))
    verdicts = [evaluate(child, entries) for child in node.children]
    states = [v.state for v in verdicts]
    times = [v.since for v in verdicts if v.since]
    if node.match == "all":
        if IMPOSSIBLE in states:
            bad = next(v for v in verdicts if v.state == IMPOSSIBLE)
            return Verdict(IMPOSSIBLE, bad.since, bad.blocking)
        if all(s == MET for s in states):
            return Verdict(MET, max(times) if times else None)
        return Verdict(PENDING, None, _join(v.blocking for v in verdicts if v.state == PENDING))
    met = [v.since for v in verdicts if v.state == MET]
    if met:
        known = [t for t in met if t]
        return Verdict(MET, min(known) if known else None)
    if all(s == IMPOSSIBLE for s in states):
        return Verdict(
            IMPOSSIBLE, max(times) if times else None, _join(v.blocking for v in verdicts)
        )
    return Verdict(PENDING, None, _join(v.blocking for v in verdicts if v.state == PENDING))


def _join(parts: Any) -> tuple[str, ...]:
    out: list[str] = []
    for part in parts:
        out.extend(name for name in part if name not in out)
    return tuple(out)


def names_text(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _invalid(status: Status, h: str, message: str) -> Status:
    old = status.get("failure") or {}
    at = old.get("at") if old.get("specHash") == h else None
    failure = {"reason": INVALID_SPEC, "message": message[:4096], "specHash": h}
    if at:
        failure["at"] = at
    status.update(phase=FAILED, specHash=h, failure=failure, message=message[:4096])
    status.pop("openedAt", None)
    status.setdefault("openCount", 0)
    status["met"] = "0/0"
    return status


def normalize(spec: Spec, status: Mapping[str, Any]) -> Status:
    """Every derived field recomputed from the spec and the trusted leaf entries.

    Pure, total (any stored object) and idempotent; used by the SDK on every write and by
    the operator's core controller to repair drift.
    """
    s: Status = copy.deepcopy(dict(status or {}))
    h = spec_hash(spec)
    try:
        gs = parse_spec(spec)
    except SpecError as exc:
        return _invalid(s, h, f"invalid spec: {exc}")
    prev_phase, prev_hash = s.get("phase"), s.get("specHash")
    by_name = {str(e.get("name")): e for e in s.get("conditions") or () if isinstance(e, Mapping)}
    s["conditions"] = [by_name[leaf.name] for leaf in gs.leaves if leaf.name in by_name]
    entries = trusted_entries(gs, s)
    verdict = evaluate(gs.root, entries)
    failure = s.get("failure")
    if not isinstance(failure, Mapping) or failure.get("specHash") != h:
        failure = None
    if failure is None and verdict.state == IMPOSSIBLE:
        why = "; ".join(
            f"{name}: {entries[name].get('message') or 'can never be met'}"
            for name in verdict.blocking[:4]
        )
        failure = {"reason": CONDITION_FAILED, "message": f"can never open: {why}", "specHash": h}
        if verdict.since:
            failure["at"] = verdict.since
    same = prev_hash == h
    was_open = prev_phase == OPEN and same
    if failure is not None:
        s["failure"] = dict(failure)
        s["phase"] = FAILED
        s["message"] = str(failure.get("message", ""))[:4096]
        s.pop("openedAt", None)
    else:
        s.pop("failure", None)
        if verdict.state == MET or (gs.latch and was_open):
            s["phase"] = OPEN
            if not was_open or not s.get("openedAt"):
                if verdict.since:
                    s["openedAt"] = verdict.since
                else:
                    s.pop("openedAt", None)
            s["message"] = "open (latched)" if gs.latch else "open"
        else:
            s["phase"] = WAITING
            s.pop("openedAt", None)
            s["message"] = f"waiting for: {names_text(verdict.blocking)}"
    count = s.get("openCount")
    count = count if isinstance(count, int) and not isinstance(count, bool) else 0
    if s["phase"] == OPEN and not was_open:
        count += 1
    s["openCount"] = count
    s["specHash"] = h
    met = sum(1 for leaf in gs.leaves if entries.get(leaf.name, {}).get("met") is True)
    s["met"] = f"{met}/{len(gs.leaves)}"
    return s


def rebase(obj: KObject) -> Status:
    """``obj``'s status without the conclusions drawn for another generation of its spec.

    ``normalize`` sees only ``(spec, status)``, so it ties latch and failure to the spec's
    *content* (``specHash``). A spec edited A -> B -> A with no status write in between
    would then find its old conclusions valid again; judging through the object's
    ``metadata.generation`` (recorded as ``specGeneration``) makes every spec change start
    afresh, as documented. Entries stay: their fingerprints decide whether they count.
    """
    s: Status = copy.deepcopy(dict(obj.status))
    if s.get("specGeneration") != obj.generation:
        for key in ("phase", "failure", "openedAt", "specHash"):
            s.pop(key, None)
        s["specGeneration"] = obj.generation
    return s


def judge(obj: KObject) -> Status:
    """The gate as readers must see it: :func:`normalize` over :func:`rebase`.

    Writers start from this too (not from the stored status), so a latch that readers saw
    open in this generation holds even if nobody had written it yet.
    """
    return normalize(obj.spec, rebase(obj))


# -- writes --------------------------------------------------------------------------------


@attrs.frozen
class LeafResult:
    """What an observer found for one leaf."""

    met: bool
    message: str
    failed: bool = False


def _entry(
    leaf: Leaf, old: Mapping[str, Any] | None, result: LeafResult, generation: int, now: str
) -> dict[str, Any]:
    entry: dict[str, Any] = dict(old or {})
    changed = (
        old is None
        or old.get("met") is not result.met
        or bool(old.get("failed")) is not result.failed
        or old.get("fingerprint") != leaf.fingerprint
    )
    entry.update(
        name=leaf.name,
        type=leaf.type_name,
        met=result.met,
        message=result.message[:MAX_MESSAGE],
        observedGeneration=generation,
        fingerprint=leaf.fingerprint,
    )
    if result.failed:
        entry["failed"] = True
    else:
        entry.pop("failed", None)
    if changed or not entry.get("lastTransitionTime"):
        entry["lastTransitionTime"] = now
    return entry


def apply_results(
    spec: Spec,
    status: Mapping[str, Any],
    results: Mapping[str, LeafResult],
    *,
    generation: int,
    now: str,
) -> Status:
    """Record observed leaf results (and a placeholder for unmarked external leaves).

    ``lastTransitionTime`` moves only when ``met``/``failed`` (or the leaf's spec) changed.
    Returns the normalized status; compare with the input to decide whether to write.
    """
    try:
        gs = parse_spec(spec)
    except SpecError:
        return normalize(spec, status)
    s: Status = copy.deepcopy(dict(status or {}))
    by_name = {str(e.get("name")): e for e in s.get("conditions") or () if isinstance(e, Mapping)}
    for leaf in gs.leaves:
        old = by_name.get(leaf.name)
        current = old is not None and old.get("fingerprint") == leaf.fingerprint
        if leaf.type == "external":
            if current:
                continue  # a mark is never overwritten by an observer
            result: LeafResult | None = LeafResult(False, "not marked yet")
        else:
            result = results.get(leaf.name)
        if result is not None:
            by_name[leaf.name] = _entry(leaf, old, result, generation, now)
    s["conditions"] = [by_name[leaf.name] for leaf in gs.leaves if leaf.name in by_name]
    s["observedGeneration"] = generation
    return normalize(spec, s)


def mark(
    spec: Spec,
    status: Mapping[str, Any],
    name: str,
    *,
    met: bool,
    message: str,
    marked_by: Mapping[str, str],
    generation: int,
    now: str,
) -> Status:
    """Set the external condition ``name`` (the SDK's ``Gate.mark``).

    Raises:
        ConfigurationError: ``name`` is not an external condition of this gate's spec.
    """
    gs = parse_spec(spec)
    leaf = gs.leaf(name)
    if leaf is None or leaf.type != "external":
        externals = [lf.name for lf in gs.leaves if lf.type == "external"]
        raise ConfigurationError(
            f"condition must name an external condition of this gate "
            f"({', '.join(externals) or 'it has none'}), got {name!r}"
        )
    s: Status = copy.deepcopy(dict(status or {}))
    by_name = {str(e.get("name")): e for e in s.get("conditions") or () if isinstance(e, Mapping)}
    old = by_name.get(name)
    if old is not None and old.get("fingerprint") != leaf.fingerprint:
        old = None
    entry = _entry(leaf, old, LeafResult(met, message), generation, now)
    entry["markedBy"] = dict(marked_by)
    by_name[name] = entry
    s["conditions"] = [by_name[lf.name] for lf in gs.leaves if lf.name in by_name]
    return normalize(spec, s)


def mark_write(
    obj: KObject,
    name: str,
    *,
    met: bool,
    message: str,
    marked_by: Mapping[str, str],
    now: str,
) -> Status | None:
    """The status a marker writes to set ``name`` on ``obj`` (``None``: already so).

    Only that condition's entry changes: the admission policy lets a marker touch nothing
    else (the derived fields are the operator's; readers judge them themselves from the
    conditions, so the gate opens with the operator down). The entry is computed from
    :func:`judge` (what readers saw), so a latch they saw open holds.

    Raises:
        ConfigurationError: ``name`` is not an external condition of this gate's spec.
    """
    marked = mark(
        obj.spec,
        judge(obj),
        name,
        met=met,
        message=message,
        marked_by=marked_by,
        generation=obj.generation,
        now=now,
    )
    entry = next(e for e in marked["conditions"] if e.get("name") == name)
    conditions = [dict(e) for e in obj.status.get("conditions") or ()]
    at = next((i for i, e in enumerate(conditions) if e.get("name") == name), None)
    if at is None:
        conditions.append(entry)
    elif conditions[at] == entry:
        return None
    else:
        conditions[at] = entry
    return {**obj.status, "conditions": conditions}


# -- operator rules ------------------------------------------------------------------------


def _timer(obj: KObject) -> tuple[Hashable, float] | None:
    s = judge(obj)
    timeout = obj.spec.get("timeoutSeconds")
    if s["phase"] != WAITING or not isinstance(timeout, int) or isinstance(timeout, bool):
        return None
    # One episode per waiting period of one spec: reopening and closing again restarts it.
    return ((obj.uid, s["specHash"], s["openCount"]), float(timeout))


def on_timeout(obj: KObject) -> Status | None:
    """Fail a gate still waiting when its timeout ran out, naming the unmet conditions."""
    s = judge(obj)
    if s["phase"] != WAITING:
        return None
    gs = parse_spec(obj.spec)
    waiting = evaluate(gs.root, trusted_entries(gs, s)).blocking
    s["failure"] = {
        "reason": TIMEOUT,
        "message": f"timed out after spec.timeoutSeconds={gs.timeout_seconds}s waiting for: "
        f"{names_text(waiting)}",
        "specHash": s["specHash"],
        "at": rfc3339(SYSTEM_CLOCK.now()),
    }
    return normalize(obj.spec, s)


def _gauges(obj: KObject) -> Mapping[str, float]:
    s = judge(obj)
    met, _, total = str(s.get("met", "0/0")).partition("/")
    return {
        "met": float(met or 0),
        "conditions": float(total or 0),
        "open": 1.0 if s["phase"] == OPEN else 0.0,
    }


def _describe(obj: KObject) -> str:
    s = judge(obj)
    return f"{s['phase']} ({s['met']} met): {s['message']}"


RULES: Final = register(
    KindRules(
        kind=GATE,
        entry_maps=(),
        normalize=normalize,
        timer=_timer,
        on_timeout=on_timeout,
        gauges=_gauges,
        describe=_describe,
        rebase=rebase,
    )
)

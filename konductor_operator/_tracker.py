"""What the operator has *seen* of each object: entry clocks, timeout stopwatches, pods.

Every watch event of a registered kind goes through :meth:`ObjectTracker.observe`. The
tracker restarts an entry's clock only when its :func:`~._reaping.entry_marker` changes
(a renewal), on the operator's own monotonic clock (``ExpiryTracker``), so a client's wall
clock never matters. It also starts a stopwatch when it first sees a kind's timeout episode,
indexes entries by the pod they name, and reports what changed (for Events).

No I/O: the core controller feeds it events and asks it for deadlines and verdicts.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, final

import attrs

from konductor_sdk._kernel.clock import Clock
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines.rules import KindRules

from ._reaping import (
    EntryId,
    Removal,
    entry_marker,
    entry_pod,
    entry_ttl,
    expired_removal,
    iter_entries,
    phase_of,
)
from ._sessions import session_of

ObjKey = tuple[str, str, str]
"""``(kind, namespace, name)``."""

PodKey = tuple[str, str]
"""``(namespace, name)`` of a pod."""

Entries = tuple[tuple[EntryId, Mapping[str, Any]], ...]


def obj_key(rules: KindRules, obj: KObject) -> ObjKey:
    return (rules.kind.kind, obj.namespace, obj.name)


@attrs.frozen
class Observation:
    """What one observation changed.

    Attributes:
        first: the object was not tracked before (startup, creation, re-creation): the
            ``added`` entries were not necessarily granted just now.
        added / removed: entries that appeared / disappeared since the last observation.
        old_phase / new_phase: ``status.phase`` before and after.
        reshaped: something other than renewals changed: the spec (generation), a field
            outside the entry maps, or the set of entries. A renewal (``renewCount``
            bumped by a JSON patch) cannot make the derived fields drift, so the operator
            skips re-normalizing on those — the bulk of all watch events.
    """

    first: bool
    added: Entries = ()
    removed: Entries = ()
    old_phase: str | None = None
    new_phase: str | None = None
    reshaped: bool = True


@attrs.define
class _Tracked:
    uid: str
    clocks: ExpiryTracker
    entries: dict[EntryId, Mapping[str, Any]] = attrs.Factory(dict)
    timed: set[EntryId] = attrs.Factory(set)
    pods: dict[EntryId, PodRef] = attrs.Factory(dict)
    sessions: dict[EntryId, str] = attrs.Factory(dict)
    named: frozenset[str] = frozenset()
    """Sessions named outside the entry maps (``KindRules.sessions_of``)."""
    phase: str | None = None
    timer: tuple[Hashable, float, float] | None = None
    """``(episode, monotonic start, seconds)`` of the running timeout, if any."""
    timer_handled: bool = False
    """The running episode's timeout fired already (so it schedules nothing more)."""
    shape: tuple[int, dict[str, Any]] | None = None
    """``(generation, status outside the entry maps)`` as last seen."""


@final
class ObjectTracker:
    """Observation state of every object of every registered kind in scope."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._objects: dict[ObjKey, _Tracked] = {}
        self._by_pod: dict[PodKey, set[ObjKey]] = {}
        self._by_session: dict[PodKey, tuple[ObjKey, ...]] = {}
        """Objects naming each session: a tuple, as a session names few objects (one
        each, mostly) and 100,000 sets of one would cost more than the entries."""

    def __repr__(self) -> str:
        entries = sum(len(t.entries) for t in self._objects.values())
        return f"<ObjectTracker objects={len(self._objects)} entries={entries}>"

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: ObjKey) -> bool:
        return key in self._objects

    def observe(self, rules: KindRules, obj: KObject) -> Observation:
        """Take in the current version of ``obj``."""
        key = obj_key(rules, obj)
        tracked = self._objects.get(key)
        first = tracked is None or tracked.uid != obj.uid
        if tracked is None or first:
            if tracked is not None:
                self._unindex(key, tracked)
            tracked = self._objects[key] = _Tracked(obj.uid, ExpiryTracker(self._clock))
        old_entries, old_phase = tracked.entries, tracked.phase
        entries = dict(iter_entries(rules, obj.status))
        tracked.timed.clear()
        for entry_id, entry in entries.items():
            ttl = entry_ttl(entry)
            if ttl is None:
                tracked.clocks.forget(entry_id)
            else:
                tracked.clocks.observe(entry_id, entry_marker(entry), ttl)
                tracked.timed.add(entry_id)
        tracked.clocks.retain(tracked.timed)
        tracked.entries = entries
        tracked.phase = phase_of(obj)
        self._reindex_pods(key, tracked, entries)
        named = rules.sessions_of(obj) if rules.sessions_of is not None else frozenset()
        self._reindex_sessions(key, tracked, entries, named)
        self._observe_timer(rules, obj, tracked)
        added = tuple((i, e) for i, e in entries.items() if i not in old_entries)
        removed = tuple((i, e) for i, e in old_entries.items() if i not in entries)
        maps = set(rules.entry_maps)
        shape = (obj.generation, {k: v for k, v in obj.status.items() if k not in maps})
        reshaped = first or bool(added or removed) or shape != tracked.shape
        tracked.shape = shape
        return Observation(
            first=first,
            added=added,
            removed=removed,
            old_phase=old_phase,
            new_phase=tracked.phase,
            reshaped=reshaped,
        )

    def forget(self, key: ObjKey) -> None:
        """The object was deleted (or left the operator's scope)."""
        tracked = self._objects.pop(key, None)
        if tracked is not None:
            self._unindex(key, tracked)

    def keys(self) -> list[ObjKey]:
        return list(self._objects)

    def deadline(self, key: ObjKey) -> float | None:
        """The next monotonic time something about ``key`` runs out (an entry, a timer)."""
        tracked = self._objects.get(key)
        if tracked is None:
            return None
        times = [tracked.clocks.expires_at(i) for i in tracked.timed]
        if tracked.timer is not None and not tracked.timer_handled:
            _, started, seconds = tracked.timer
            times.append(started + seconds)
        live = [t for t in times if t is not None]
        return min(live) if live else None

    def expired(self, key: ObjKey) -> list[Removal]:
        """Entries whose marker has not changed for their TTL on our clock."""
        tracked = self._objects.get(key)
        if tracked is None:
            return []
        now = self._clock.monotonic()
        out = []
        for entry_id in tracked.timed:
            at = tracked.clocks.expires_at(entry_id)
            if at is not None and now >= at:
                out.append(expired_removal(entry_id, tracked.entries[entry_id], at))
        return out

    def timeout_due(self, key: ObjKey) -> Hashable | None:
        """The episode whose timeout has run out, if any."""
        tracked = self._objects.get(key)
        if tracked is None or tracked.timer is None or tracked.timer_handled:
            return None
        episode, started, seconds = tracked.timer
        return episode if self._clock.monotonic() >= started + seconds else None

    def mark_timeout_handled(self, key: ObjKey, episode: Hashable) -> None:
        """The timeout of ``episode`` was acted upon; a new episode starts a new stopwatch."""
        tracked = self._objects.get(key)
        if tracked is not None and tracked.timer is not None and tracked.timer[0] == episode:
            tracked.timer_handled = True

    def timer_started(self, key: ObjKey) -> float | None:
        tracked = self._objects.get(key)
        return None if tracked is None or tracked.timer is None else tracked.timer[1]

    def pod_refs(self, key: ObjKey) -> dict[EntryId, PodRef]:
        tracked = self._objects.get(key)
        return dict(tracked.pods) if tracked is not None else {}

    def entry(self, key: ObjKey, entry_id: EntryId) -> Mapping[str, Any] | None:
        tracked = self._objects.get(key)
        return tracked.entries.get(entry_id) if tracked is not None else None

    def session_refs(self, key: ObjKey) -> dict[EntryId, str]:
        """The session each entry of ``key`` names (entries without one are absent)."""
        tracked = self._objects.get(key)
        return dict(tracked.sessions) if tracked is not None else {}

    def named_sessions(self, key: ObjKey) -> frozenset[str]:
        """Sessions ``key`` names outside its entry maps."""
        tracked = self._objects.get(key)
        return tracked.named if tracked is not None else frozenset()

    def objects_of_session(self, session: PodKey) -> set[ObjKey]:
        """Objects with an entry naming ``(namespace, session)``."""
        return set(self._by_session.get(session, ()))

    def objects_of_pod(self, pod: PodKey) -> set[ObjKey]:
        return set(self._by_pod.get(pod, ()))

    def pods(self) -> set[PodKey]:
        return set(self._by_pod)

    def _observe_timer(self, rules: KindRules, obj: KObject, tracked: _Tracked) -> None:
        running = rules.timer(obj) if rules.timer is not None else None
        if running is None:
            tracked.timer = None
            tracked.timer_handled = False
            return
        episode, seconds = running
        if tracked.timer is not None and tracked.timer[0] == episode:
            tracked.timer = (episode, tracked.timer[1], float(seconds))
        else:
            tracked.timer = (episode, self._clock.monotonic(), float(seconds))
            tracked.timer_handled = False

    def _reindex_pods(
        self, key: ObjKey, tracked: _Tracked, entries: Mapping[EntryId, Mapping[str, Any]]
    ) -> None:
        old = {(p.namespace, p.name) for p in tracked.pods.values()}
        tracked.pods = {}
        for entry_id, entry in entries.items():
            pod = entry_pod(entry)
            if pod is not None:
                # A ref without a namespace means "same namespace as the object".
                pod_ns = pod.namespace or key[1]
                tracked.pods[entry_id] = attrs.evolve(pod, namespace=pod_ns)
        new = {(p.namespace, p.name) for p in tracked.pods.values()}
        for gone in old - new:
            self._drop_index(gone, key)
        for added in new - old:
            self._by_pod.setdefault(added, set()).add(key)

    def _reindex_sessions(
        self,
        key: ObjKey,
        tracked: _Tracked,
        entries: Mapping[EntryId, Mapping[str, Any]],
        named: frozenset[str],
    ) -> None:
        old = {(key[1], s) for s in [*tracked.sessions.values(), *tracked.named]}
        tracked.sessions = {}
        for entry_id, entry in entries.items():
            name = session_of(entry)
            if name is not None:
                tracked.sessions[entry_id] = name
        tracked.named = named
        new = {(key[1], s) for s in [*tracked.sessions.values(), *named]}
        for gone in old - new:
            self._unname(gone, key)
        for added in new - old:
            self._by_session[added] = (*self._by_session.get(added, ()), key)

    def _unindex(self, key: ObjKey, tracked: _Tracked) -> None:
        for pod in {(p.namespace, p.name) for p in tracked.pods.values()}:
            self._drop_index(pod, key)
        for session in {(key[1], s) for s in [*tracked.sessions.values(), *tracked.named]}:
            self._unname(session, key)

    def _unname(self, session: PodKey, key: ObjKey) -> None:
        rest = tuple(k for k in self._by_session.get(session, ()) if k != key)
        if rest:
            self._by_session[session] = rest
        else:
            self._by_session.pop(session, None)

    def _drop_index(self, pod: PodKey, key: ObjKey) -> None:
        keys = self._by_pod.get(pod)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_pod[pod]

"""The core controller: reaping, timeouts and status aggregation for every registered kind.

Data flow, all event-driven::

    shared watch of each kind ──► ObjectTracker.observe ──► TimerHeap (next deadline)
            │                          │                         │ due
            │                          └─ drift / dead pod? ──► WorkQueue ◄──┘
    slim pod watch ──► objects naming that pod ───────────────────┘   │
                                                                 workers: reconcile()
                                                      one CAS per object per pass

``reconcile`` judges the object as cached (expired entries, entries of dead pods, a due
timeout, drift), then writes once with :func:`konductor_sdk._kernel.cas.update_status`. The
mutation re-applies the judgment to whatever object the CAS read — after a conflict that
is a fresh GET — and removes only entries that are still the very ones judged dead.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Final, final

import anyio
import attrs

from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.errors import APIError, ConflictError, ConflictExhausted, NotFoundError
from konductor_sdk._kernel.objects import CLAIM, SESSION, KObject
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk._machines.rules import KindRules, Status, registered

from ._context import OperatorContext
from ._pods import UNKNOWN, PodWatcher, SlimStore
from ._queue import TimerHeap, WorkQueue
from ._reaping import EXPIRED, Removal, apply_removals, drifted, pod_removal, session_removal
from ._reporting import report_changes, report_write
from ._sessions import SessionKey, SessionLedger, SlimClaim, slim_claim
from ._tracker import ObjectTracker, ObjKey, Observation, obj_key

# A judgment that did not lead to a write (the entry was renewed meanwhile) is retried no
# sooner than this: the watch will have delivered the renewal that restarts its clock.
RETRY_FLOOR: Final = 0.5
_ERROR_BACKOFF: Final = 2.0
_TERMINAL_POD: Final = {"Succeeded", "Failed"}
SESSION_KIND: Final = SESSION.kind
"""Work-queue keys ``("Session", namespace, name)`` judge one session."""
CLAIMS_OF: Final = "ClaimsOf"
"""Work-queue keys ``("ClaimsOf", namespace, session)`` reap the claims of an ended session."""
RECOUNT_EVERY: Final = 1.0
"""Least seconds between two writes of an object's aggregates alone (claim counts such as
``queueLength``; fields clients may not write such as ``inUse``): a thousand claims created
together, or grants at hundreds per second, cost one write a second, not one each (every
write wakes every process watching the object, and collides with its clients' CAS)."""
BULK_CLAIMS: Final = 16
"""Above this many claims of one ended session, one deletecollection (a scan of the
namespace's claims on the server) replaces a delete by name each (known from the watch)."""


@final
@attrs.frozen
class CoreStatistics:
    """A snapshot of a :class:`CoreController`."""

    objects: int
    timers: int
    queued: int
    passes: int
    pod_confirmations: int


@final
class CoreController:
    """Reaps, times out and re-aggregates every registered kind in the operator's scope.

    Args:
        ctx: the operator's context.
        rules: the kinds to manage; default: every registered kind.
    """

    def __init__(
        self, ctx: OperatorContext, *, rules: Mapping[str, KindRules] | None = None
    ) -> None:
        self.ctx = ctx
        self.log = ctx.logger
        self.rules = dict(rules if rules is not None else registered())
        self.tracker = ObjectTracker(ctx.clock)
        self.timers: TimerHeap[ObjKey] = TimerHeap()
        self.session_timers: TimerHeap[SessionKey] = TimerHeap()
        """Sessions' expiry, keyed by the ledger's own key tuples (100,000 of them)."""
        self.queue: WorkQueue[ObjKey] = WorkQueue()
        self.pods = PodWatcher(ctx.client, ctx.namespaces, self._on_pod, self._on_pods_synced)
        self.ledger = SessionLedger(ctx.clock)
        self._watches: dict[tuple[str, str | None], KindWatch] = {}
        self._session_watches: dict[str | None, KindWatch] = {}
        self._claim_watches: dict[str | None, KindWatch] = {}
        self._drops: dict[ObjKey, dict[str, SlimClaim]] = {}
        """Claims of ended sessions whose target must drop them (``drop_sessions``) first."""
        self._reaping: dict[ObjKey, tuple[Removal, ...]] = {}
        self._counted: dict[ObjKey, float] = {}
        """When each object's claim counts were last written (operator clock)."""
        self._recount: dict[ObjKey, float] = {}
        """Objects whose claim counts are stale, and when they may be written next."""
        self._timer_wake = anyio.Event()
        self._removers: list[Any] = []
        self.passes = 0
        self.ready = anyio.Event()
        """Set once every watch has synced (what ``/readyz`` reports for ``core``)."""

    def __repr__(self) -> str:
        return f"<CoreController kinds={sorted(self.rules)} {self.tracker!r} {self.queue!r}>"

    def statistics(self) -> CoreStatistics:
        return CoreStatistics(
            objects=len(self.tracker),
            timers=len(self.timers) + len(self.session_timers),
            queued=len(self.queue),
            passes=self.passes,
            pod_confirmations=self.pods.confirmations,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled (the operator cancels it when leadership ends)."""
        ctx = self.ctx
        await ctx.client.connect()
        ctx.health.set_ready("core", False)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.pods.run)
                for rules in self.rules.values():
                    for ns in ctx.namespaces if ctx.namespaces is not None else (None,):
                        self._attach(rules, ns)
                for ns in ctx.namespaces if ctx.namespaces is not None else (None,):
                    self._attach_sessions(tg, ns)
                self._removers.append(ctx.metrics.add_object_source(self._objects))
                ctx.metrics.tracked_objects.set_function(lambda: len(self.tracker))
                tg.start_soon(self._timer_loop)
                tg.start_soon(self._resync_loop)
                tg.start_soon(self._readiness)
                for _ in range(ctx.config.workers):
                    tg.start_soon(self._worker)
        finally:
            for remove in self._removers:
                remove()
            self._removers.clear()
            ctx.metrics.tracked_objects.set_function(lambda: 0)
            ctx.health.remove("core")

    def _attach(self, rules: KindRules, namespace: str | None) -> None:
        watch = self.ctx.client.start_watch(rules.kind, namespace)
        self._watches[(rules.kind.kind, namespace)] = watch
        self._removers.append(
            watch.add_listener(lambda etype, obj: self._on_object(rules, etype, obj))
        )
        # The cache may be synced already (a previous term as leader): replay it. No await
        # between adding the listener and this loop, so no change can fall in between.
        for obj in watch.objects():
            self._on_object(rules, "ADDED", obj)

    def _attach_sessions(self, tg: Any, namespace: str | None) -> None:
        # The operator may watch 100,000 of each: their watches read them slim and keep
        # no objects; the ledger keeps the one record of each.
        store = self.ctx.client.store
        sessions = KindWatch(
            SlimStore(store, _slim_session_object), SESSION, namespace, versions=self.ledger
        )
        self._session_watches[namespace] = sessions
        sessions.add_listener(self._on_session)
        tg.start_soon(sessions.run)
        tg.start_soon(self._sessions_synced, sessions)
        claims = KindWatch(
            SlimStore(store, _slim_claim_object),
            CLAIM,
            namespace,
            versions=self.ledger.claim_versions,
        )
        self._claim_watches[namespace] = claims
        claims.add_listener(self._on_claim)
        tg.start_soon(claims.run)
        tg.start_soon(self._claims_synced, claims)

    def _objects(self) -> Iterable[tuple[KindRules, KObject]]:
        for (kind, _), watch in list(self._watches.items()):
            rules = self.rules[kind]
            for obj in watch.objects():
                yield rules, obj

    def _watch_of(self, kind: str, namespace: str) -> KindWatch | None:
        return self._watches.get((kind, namespace)) or self._watches.get((kind, None))

    def kinds_ready(self) -> bool:
        """Every kind's watch synced, or its CRD is not served (nothing to manage)."""
        watches = [
            *self._watches.values(),
            *self._session_watches.values(),
            *self._claim_watches.values(),
        ]
        return all(w.synced.is_set() or isinstance(w.last_error, NotFoundError) for w in watches)

    async def _readiness(self) -> None:
        warned = False
        started = time.monotonic()
        while not (self.kinds_ready() and self.pods.all_synced()):
            if not warned and time.monotonic() - started > 30:
                warned = True
                pending = [
                    f"{k}/{ns or '*'}"
                    for (k, ns), w in self._watches.items()
                    if not w.synced.is_set()
                ]
                self.log.warning("watches not synced after 30s: %s", ", ".join(pending))
            await anyio.sleep(0.05)
        for (kind, ns), watch in self._watches.items():
            if not watch.synced.is_set():
                self.log.warning("%s is not served in %s (CRD missing?); skipped", kind, ns or "*")
        self.ctx.health.set_ready("core", True)
        self.ready.set()
        self.log.info("core controller ready", extra={"objects": len(self.tracker)})

    # -- observation (watch listeners: synchronous, must not block) --------------------------

    def _on_object(self, rules: KindRules, etype: str, obj: KObject) -> None:
        key = obj_key(rules, obj)
        if etype == "DELETED":
            self._forget(key)
            return
        observation = self.tracker.observe(rules, obj)
        reaping = {r.entry for r in self._reaping.get(key, ())}
        report_changes(self.ctx.events, rules, obj, observation, reaping)
        self._schedule(key)
        if self._needs_attention(rules, key, obj, observation):
            self.queue.add(key)
        elif self._counts_stale(rules, key, obj) or (
            observation.reshaped and _safe_drifted(rules, obj, self.log)
        ):
            self._recount_soon(key)

    def _forget(self, key: ObjKey) -> None:
        self.tracker.forget(key)
        self.timers.schedule(key, None)
        self._counted.pop(key, None)
        self._recount.pop(key, None)

    def _needs_attention(
        self, rules: KindRules, key: ObjKey, obj: KObject, change: Observation
    ) -> bool:
        # Pods change through pod events (_on_pod); here only new references can be
        # suspicious. Entry-internal edits other than renewals are caught by the resync.
        refs = self.tracker.pod_refs(key)
        new = refs.values() if change.first else [refs[i] for i, _ in change.added if i in refs]
        if any(self.pods.suspicious(ref) for ref in new):
            return True
        sessions = self.tracker.session_refs(key)
        named = (
            sessions.values()
            if change.first
            else [sessions[i] for i, _ in change.added if i in sessions]
        )
        return any(self._session_suspicious((key[1], s)) for s in named)

    def _on_session(self, etype: str, obj: KObject) -> None:
        if etype == "DELETED":
            skey = (obj.namespace, obj.name)
            self.session_timers.schedule(skey, None)
            self._session_ended(skey)
            return
        skey = self.ledger.observe(obj)
        if self.session_timers.schedule(skey, self.ledger.expires_at(skey)):
            self._timer_wake.set()
        pod = self.ledger.pod(skey)
        if pod is not None and self.pods.suspicious(pod):
            self.queue.add((SESSION_KIND, *skey))

    def _on_claim(self, etype: str, obj: KObject) -> None:
        if etype == "DELETED":
            # The watch keeps no claims: a deletion it finds on a relist carries no spec.
            for target in self.ledger.forget_claim(obj.namespace, obj.name):
                self._claims_changed(target)
            return
        claim = slim_claim(obj)
        if claim is None:
            return
        for target in self.ledger.observe_claim(claim):
            self._claims_changed(target)
        skey = (claim.namespace, claim.session)
        if self.ledger.is_dead(skey) or not self.ledger.known(skey):
            # Ended already, or unknown (a lagging watch, or ended while we were away):
            # the claims pass confirms with a GET before it reaps anything.
            self.queue.add((CLAIMS_OF, claim.namespace, claim.session))

    # -- aggregates (queueLength, inUse...): coalesced, one write per RECOUNT_EVERY at most --

    def _claims_changed(self, key: ObjKey) -> None:
        rules = self.rules.get(key[0])
        if rules is None or rules.claim_counts is None:
            return
        watch = self._watch_of(key[0], key[1])
        obj = watch.get(key[2], key[1]) if watch is not None else None
        # An object not seen yet is counted when it is (_on_object).
        if obj is not None and self._counts_stale(rules, key, obj):
            self._recount_soon(key)

    def _claims_listed(self, namespace: str) -> bool:
        watch = self._claim_watches.get(namespace) or self._claim_watches.get(None)
        return watch is not None and watch.synced.is_set()

    def _claim_counts(self, rules: KindRules, key: ObjKey, obj: KObject) -> Mapping[str, int]:
        """The counts ``obj`` should show; empty while the claims are not all listed."""
        if rules.claim_counts is None or not self._claims_listed(key[1]):
            return {}
        return rules.claim_counts(obj.status, self.ledger.claims_on(key))

    def _counts_stale(self, rules: KindRules, key: ObjKey, obj: KObject) -> bool:
        status = obj.status
        return any(status.get(f) != v for f, v in self._claim_counts(rules, key, obj).items())

    def _recount_at(self, key: ObjKey) -> float:
        """When ``key``'s stale counts may be written (set once; later changes ride along)."""
        when = self._recount.get(key)
        if when is None:
            when = self._recount[key] = self._counted.get(key, -RECOUNT_EVERY) + RECOUNT_EVERY
        return when

    def _recount_soon(self, key: ObjKey) -> None:
        pending = key in self._recount
        when = self._recount_at(key)
        if pending:
            return
        if when <= self.ctx.clock.monotonic():
            self.queue.add(key, background=self._only_recount(key))
        else:
            self._schedule(key)

    def _only_recount(self, key: ObjKey) -> bool:
        """Whether all ``key`` is due for is a rewrite of its claim counts: those are for
        people and metrics, and wait in the background lane behind reaping (after a load
        of 100,000, a thousand of them would otherwise hold up every session expiring)."""
        if key not in self._recount or key in self._drops:
            return False
        deadline = self.tracker.deadline(key)
        if deadline is not None and deadline <= self.ctx.clock.monotonic():
            return False
        named = [*self.tracker.session_refs(key).values(), *self.tracker.named_sessions(key)]
        return not any(self.ledger.is_dead((key[1], s)) for s in named)

    async def _claims_synced(self, watch: KindWatch) -> None:
        # Counts were not judged before every claim was listed.
        await watch.synced.wait()
        for key in self.tracker.keys():  # noqa: SIM118 - a copy: queueing may mutate
            if watch.namespace in (None, key[1]):
                self._claims_changed(key)

    def _session_suspicious(self, skey: SessionKey) -> bool:
        """Ended, or not (yet) seen although the session watch is synced: worth a pass
        (which confirms an unknown one with a GET before reaping anything)."""
        if self.ledger.is_dead(skey):
            return True
        watch = self._session_watches.get(skey[0]) or self._session_watches.get(None)
        return watch is not None and watch.synced.is_set() and not self.ledger.known(skey)

    async def _sessions_synced(self, watch: KindWatch) -> None:
        # Entries observed before the sessions were listed could not be judged then.
        await watch.synced.wait()
        for key in self.tracker.keys():  # noqa: SIM118 - a copy: queueing may mutate
            if any(
                self._session_suspicious((key[1], s))
                for s in self.tracker.session_refs(key).values()
            ):
                self.queue.add(key)
        for skey in self.ledger.claim_sessions():
            if not self.ledger.known(skey):
                self.queue.add((CLAIMS_OF, *skey))

    def _session_ended(self, skey: SessionKey) -> None:
        self.ledger.ended(skey)
        for key in self.tracker.objects_of_session(skey):
            self.queue.add(key)
        self.queue.add((CLAIMS_OF, *skey))

    def _on_pod(self, etype: str, pod: KObject) -> None:
        for skey in self.ledger.sessions_of_pod(pod.namespace, pod.name):
            self.queue.add((SESSION_KIND, *skey))
        for key in self.tracker.objects_of_pod((pod.namespace, pod.name)):
            refs = [r for r in self.tracker.pod_refs(key).values() if r.name == pod.name]
            if (
                etype == "DELETED"
                or pod.status.get("phase") in _TERMINAL_POD
                or any(r.uid and r.uid != pod.uid for r in refs)
            ):
                self.queue.add(key)

    def _on_pods_synced(self, namespace: str | None) -> None:
        # Entries whose pods vanished while nobody watched produce no pod event: check
        # every object naming a pod of that namespace once the pod cache is complete.
        for pod in self.tracker.pods():
            if namespace is None or pod[0] == namespace:
                for key in self.tracker.objects_of_pod(pod):
                    self.queue.add(key)
        for skey in self.ledger.keys():  # noqa: SIM118 - a copy: queueing may mutate
            if self.ledger.pod(skey) is not None and (namespace is None or skey[0] == namespace):
                self.queue.add((SESSION_KIND, *skey))

    def _schedule(self, key: ObjKey, *, floor: float | None = None) -> None:
        when = self.tracker.deadline(key)
        if when is not None and floor is not None:
            when = max(when, floor)
        recount = self._recount.get(key)
        if recount is not None and (when is None or recount < when):
            when = recount
        if self.timers.schedule(key, when):
            self._timer_wake.set()

    # -- scheduling loops -------------------------------------------------------------------

    def poke(self) -> None:
        """Re-check deadlines now (after a clock jump; tests advancing a fake clock)."""
        self._timer_wake.set()

    async def _timer_loop(self) -> None:
        clock = self.ctx.clock
        while True:
            now = clock.monotonic()
            for key in self.timers.pop_due(now):
                self.queue.add(key, background=self._only_recount(key))
            for skey in self.session_timers.pop_due(now):
                self.queue.add((SESSION_KIND, *skey))
            if self._timer_wake.is_set():
                self._timer_wake = anyio.Event()
            deadlines = [self.timers.next_deadline(), self.session_timers.next_deadline()]
            nxt = min((d for d in deadlines if d is not None), default=None)
            delay = 3600.0 if nxt is None else max(0.0, nxt - clock.monotonic())
            with anyio.move_on_after(delay):
                await self._timer_wake.wait()

    async def _resync_loop(self) -> None:
        while True:
            await anyio.sleep(self.ctx.config.resync_seconds)
            # In the background lane: a pass over each of 1,000 objects takes about a
            # second in all, which a session expiring meanwhile must not wait behind.
            for key in self.tracker.keys():  # noqa: SIM118 - a copy: the loop may mutate
                self.queue.add(key, background=True)
            for skey in self.ledger.claim_sessions():
                if not self.ledger.known(skey):
                    self.queue.add((CLAIMS_OF, *skey), background=True)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
            except (APIError, ConflictExhausted) as exc:
                self.log.warning("reconcile %s failed: %s", "/".join(key), exc)
                self._retry_later(key)
            except Exception:
                self.log.exception("reconcile %s crashed", "/".join(key))
                self._retry_later(key)
            finally:
                self.queue.done(key)

    def _retry_later(self, key: ObjKey) -> None:
        if self.timers.schedule(key, self.ctx.clock.monotonic() + _ERROR_BACKOFF):
            self._timer_wake.set()

    # -- one pass over one object -----------------------------------------------------------

    async def reconcile(self, key: ObjKey) -> None:
        """Judge ``key`` as cached and write at most one CAS covering everything due."""
        kind, namespace, name = key
        if kind == SESSION_KIND:
            await self._reconcile_session((namespace, name))
            return
        if kind == CLAIMS_OF:
            await self._reap_claims((namespace, name))
            return
        rules = self.rules[kind]
        watch = self._watch_of(kind, namespace)
        obj = watch.get(name, namespace) if watch is not None else None
        if obj is None:
            self._forget(key)
            drops = self._drops.pop(key, None)
            if drops:  # the target is gone, and with it whatever it counted
                await self._delete_claims(drops.values())
            return
        if key not in self.tracker:
            self.tracker.observe(rules, obj)
        clock = self.ctx.clock
        started = clock.monotonic()
        self.passes += 1
        removals = (
            self.tracker.expired(key)
            + await self._pod_removals(key)
            + await self._session_removals(key)
        )
        drops = dict(self._drops.get(key, {}))
        dropped = await self._dropped_claims(rules, drops)
        dead_named = frozenset(
            [
                s
                for s in self.tracker.named_sessions(key)
                if await self._session_over((namespace, s))
            ]
        )
        dead = dead_named | frozenset(str(c.spec.get("session", "")) for c in dropped)
        episode = self.tracker.timeout_due(key)
        drift = _safe_drifted(rules, obj, self.log)
        # Stale aggregates (claim counts; the fields clients may not write, which every
        # grant and release leaves behind) are written alone only when their turn came, at
        # most once per RECOUNT_EVERY per object: chasing every grant would double the
        # object's writes and collide with its clients'. Any other write carries them.
        recount = False
        if drift or self._counts_stale(rules, key, obj):
            recount = self._recount_at(key) <= clock.monotonic()
        else:
            self._recount.pop(key, None)
        if not removals and episode is None and not dead and not recount:
            self._schedule(key, floor=clock.monotonic() + RETRY_FLOOR)
            return
        # What the last mutate() call decided: (removals applied, timeout fired, timeout due).
        written: list[tuple[tuple[Removal, ...], bool, bool]] = []

        def mutate(fresh: KObject) -> Status | None:
            if fresh.uid != obj.uid:
                return None  # deleted and re-created: a different object, judge it anew
            status, applied = apply_removals(rules, fresh, removals)
            if dead and rules.drop_sessions is not None:
                after = rules.drop_sessions(KObject({**fresh.raw, "status": status}), dead, dropped)
                if after is not None:
                    status = rules.normalize(fresh.spec, after)
            fired = due = False
            if episode is not None and self._timeout_still_due(rules, key, fresh, episode):
                assert rules.on_timeout is not None
                due = True
                timed_out = rules.on_timeout(KObject({**fresh.raw, "status": status}))
                if timed_out is not None:
                    status, fired = timed_out, True
            counts = self._claim_counts(rules, key, KObject({**fresh.raw, "status": status}))
            if any(status.get(f) != v for f, v in counts.items()):
                status = {**status, **counts}
            self._reaping[key] = applied
            written[:] = [(applied, fired, due)]
            if status == dict(fresh.status):
                return None
            if (
                not applied
                and not fired
                and not dropped
                and not _idempotent(rules, fresh.spec, status)
            ):
                self.log.error("%s: normalize is not idempotent; not writing", "/".join(key))
                return None
            return status

        try:
            result = await update_status(
                self.ctx.client, rules.kind, namespace, name, mutate, current=obj
            )
        except NotFoundError:
            self._forget(key)
            return
        finally:
            self._reaping.pop(key, None)
        applied, fired, due = written[0] if written else ((), False, False)
        if drops:
            # Dropped from the target (or there was nothing to drop): the claims may go.
            self._forget_drops(key, drops)
            await self._delete_claims(drops.values())
        if episode is not None and due:
            self.tracker.mark_timeout_handled(key, episode)
        if result.wrote:
            report_write(
                self.ctx, rules, result.object, applied, fired=fired, drift=drift, counted=recount
            )
            self._counted[key] = clock.monotonic()
        self._recount.pop(key, None)
        if self._counts_stale(rules, key, result.object):
            self._recount_at(key)  # claims changed during the write: after the next turn
        self.ctx.metrics.reconcile_seconds.labels(kind).observe(clock.monotonic() - started)
        self._schedule(key, floor=clock.monotonic() + RETRY_FLOOR)

    async def _session_removals(self, key: ObjKey) -> list[Removal]:
        out = []
        for entry_id, session in self.tracker.session_refs(key).items():
            if await self._session_over((key[1], session)):
                entry = self.tracker.entry(key, entry_id)
                if entry is not None:
                    out.append(session_removal(entry_id, entry))
        return out

    async def _session_over(self, skey: SessionKey) -> bool:
        """Whether the session ended. One the cache does not know is confirmed with a GET:
        a watch may deliver an entry naming a new session before the session itself."""
        if self.ledger.is_dead(skey):
            return True
        if self.ledger.known(skey):
            return False
        watch = self._session_watches.get(skey[0]) or self._session_watches.get(None)
        if watch is None or not watch.synced.is_set():
            return False
        try:
            await self.ctx.client.store.get(SESSION, skey[0], skey[1])
        except NotFoundError:
            self.ledger.ended(skey)
            return True
        return False

    async def _dropped_claims(
        self, rules: KindRules, drops: Mapping[str, SlimClaim]
    ) -> list[KObject]:
        if rules.drop_sessions is None or not drops:
            return []
        found = []
        for claim in drops.values():
            try:
                found.append(await self.ctx.client.store.get(CLAIM, claim.namespace, claim.name))
            except NotFoundError:
                continue
        return found

    def _forget_drops(self, key: ObjKey, done: Mapping[str, SlimClaim]) -> None:
        pending = self._drops.get(key)
        if pending is None:
            return
        for name in done:
            pending.pop(name, None)
        if not pending:
            del self._drops[key]

    async def _reconcile_session(self, skey: SessionKey) -> None:
        """Delete the session if it expired or its pod is over; then reap what names it."""
        judged = self.ledger.judged(skey)
        if judged is None:
            return
        reason: str | None = None
        label = ""
        if self.ledger.expired(skey):
            reason, label = "expired", EXPIRED
        else:
            pod = self.ledger.pod(skey)
            if pod is not None:
                verdict = await self.pods.verdict(pod)
                if verdict not in (None, UNKNOWN):
                    reason, label = f"pod over ({verdict})", str(verdict)
        if reason is None:
            self._schedule_session(skey)
            return
        uid, resource_version = judged
        try:
            await self.ctx.client.store.delete(
                SESSION, skey[0], skey[1], uid=uid, resource_version=resource_version
            )
        except ConflictError:
            # Renewed (or changed) since we judged it: the new version restarts its clock.
            self._schedule_session(skey)
            return
        except NotFoundError:
            pass
        self.log.info("session %s/%s ended: %s", skey[0], skey[1], reason)
        self.ctx.metrics.sessions_ended.labels(label).inc()
        self.session_timers.schedule(skey, None)
        self._session_ended(skey)

    def _schedule_session(self, skey: SessionKey) -> None:
        when = self.ledger.expires_at(skey)
        floor = self.ctx.clock.monotonic() + RETRY_FLOOR
        if when is not None and self.session_timers.schedule(skey, max(when, floor)):
            self._timer_wake.set()

    async def _reap_claims(self, skey: SessionKey) -> None:
        """Remove the claims of an ended session: from their targets first, where the kind
        keeps something about them (``drop_sessions``), then the claim objects."""
        if not await self._session_over(skey):
            return
        direct = []
        dropping = False
        for claim in self.ledger.claims_of(skey):
            rules = self.rules.get(claim.target_kind)
            if rules is not None and rules.drop_sessions is not None:
                target = (claim.target_kind, claim.namespace, claim.target_name)
                self._drops.setdefault(target, {})[claim.name] = claim
                self.queue.add(target)
                dropping = True
            else:
                direct.append(claim)
        if len(direct) > BULK_CLAIMS and not dropping:
            # One request however many claims the session had (a process with 1,000
            # queued waiters); the server still runs admission for each. Not for a few:
            # the server finds them by scanning every claim of the namespace.
            with contextlib.suppress(NotFoundError):
                await self.ctx.client.store.delete_collection(
                    CLAIM, skey[0], field_selector=f"spec.session={skey[1]}"
                )
            return
        await self._delete_claims(direct)

    async def _delete_claims(self, claims: Iterable[SlimClaim]) -> None:
        for claim in claims:
            try:
                await self.ctx.client.store.delete(
                    CLAIM, claim.namespace, claim.name, uid=claim.uid
                )
            except (NotFoundError, ConflictError):
                continue

    def _timeout_still_due(
        self, rules: KindRules, key: ObjKey, fresh: KObject, episode: Hashable
    ) -> bool:
        if rules.timer is None or rules.on_timeout is None:
            return False
        running = rules.timer(fresh)
        started = self.tracker.timer_started(key)
        if running is None or running[0] != episode or started is None:
            return False
        return self.ctx.clock.monotonic() >= started + float(running[1])

    async def _pod_removals(self, key: ObjKey) -> list[Removal]:
        out = []
        verdicts: dict[tuple[str, str, str], str | None] = {}
        for entry_id, ref in self.tracker.pod_refs(key).items():
            ident = (ref.namespace, ref.name, ref.uid)
            if ident not in verdicts:
                verdicts[ident] = await self.pods.verdict(ref)
            reason = verdicts[ident]
            entry = self.tracker.entry(key, entry_id)
            if reason not in (None, UNKNOWN) and entry is not None:
                assert reason is not None
                out.append(pod_removal(entry_id, entry, reason))
        return out


_SLIM_METADATA: Final = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")


def _slim_metadata(md: Mapping[str, Any]) -> dict[str, Any]:
    metadata = {k: md[k] for k in _SLIM_METADATA if k in md}
    # Every object decodes its own copy of the namespace: keep one. (Not the names: the
    # watch's index and the ledger share each object's own, and a table entry per name
    # would cost more than it saves.)
    if isinstance(metadata.get("namespace"), str):
        metadata["namespace"] = sys.intern(metadata["namespace"])
    return metadata


def _slim_session_object(obj: KObject) -> KObject:
    """What the operator reads of a session: identity, TTL, renewal count and pod."""
    spec = obj.spec
    return KObject(
        {
            "metadata": _slim_metadata(obj.metadata),
            "spec": {k: spec[k] for k in ("ttlSeconds", "renewCount", "pod") if k in spec},
        }
    )


def _slim_claim_object(obj: KObject) -> KObject:
    """What the operator reads of a claim: identity, target and session only."""
    spec = obj.spec
    return KObject(
        {
            "metadata": _slim_metadata(obj.metadata),
            "spec": {k: spec[k] for k in ("target", "session") if k in spec},
        }
    )


def _safe_drifted(rules: KindRules, obj: KObject, log: logging.Logger) -> bool:
    try:
        return drifted(rules, obj)
    except Exception:
        log.exception("normalize failed on %s %s/%s", rules.kind.kind, obj.namespace, obj.name)
        return False


def _idempotent(rules: KindRules, spec: Mapping[str, Any], status: Status) -> bool:
    return rules.normalize(spec, copy.deepcopy(status)) == status


async def run(ctx: OperatorContext) -> None:
    """The core controller (``konductor_operator._core:run``), as a plug-in controller."""
    await CoreController(ctx).run()

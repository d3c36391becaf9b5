"""One client's grants on one Semaphore/Mutex/RWMutex: planning, writing, waking.

A :class:`GrantCoordinator` exists once per (client, object). It keeps

* the client's **waiters** on the object (:mod:`.semaphore_waiter`), each one task blocked
  on its own signal: a claimed waiter (its ``Claim`` is in the queue) or a claimless
  attempt of the fast path;
* the client's **permits** on the object (:mod:`.semaphore_holdings`), judged on every
  version the object watch delivers (removed → lost; asked to yield → preempted).

While waiters exist, one task runs :meth:`GrantCoordinator._run`: on every change (a new
version of the object, a change to its claim queue, a waiter arriving or leaving) it
computes the plan once (:func:`~konductor_sdk._machines.semaphore_plan.plan`, which walks
only the queue's fitting prefix) and writes one JSON patch for all of this client's
waiters in that prefix: the group commit. A write that loses (another grant got in first:
the ``test`` of the fencing counter fails) changes nothing; the task waits for the version
the watch delivers and plans again. Waiters never fail because others wait too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Final, final

import anyio
import anyio.lowlevel

from konductor_sdk._engines.semaphore_holdings import Holdings
from konductor_sdk._engines.semaphore_waiter import (
    REJECTED,
    RESTART,
    Granted,
    Waiter,
    grant_fields,
    spawn_quietly,
)
from konductor_sdk._kernel.batching import PerClient
from konductor_sdk._kernel.cas import json_patch_status
from konductor_sdk._kernel.claims import ClaimQueue, claim_queue
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import (
    APIError,
    ConflictError,
    InvalidObjectError,
    NotFoundError,
)
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.sessions import Session
from konductor_sdk._kernel.watch import KindWatch, rv_int
from konductor_sdk._machines import semaphore_plan as planning
from konductor_sdk._machines.semaphore import LockKind, burst_seconds, grants

log = logging.getLogger("konductor_sdk.semaphore")

LINGER_SECONDS: Final = 30.0
"""How long the coordinator keeps the claim queue watched after its last waiter left (the
next uncontended acquire then finds it synced)."""
PAIR_BUDGET: Final = 20_000
"""Bound on (new grants x grants they must be checked against) per write: the admission
policy's overlap check must stay inside the API server's CEL cost budget."""
MAX_NEW_PER_WRITE: Final = 64
CREATING_AT_ONCE: Final = 2
"""Claim creations in flight per client and object (a thousand waiters arriving at once
would otherwise hold a thousand requests' buffers). Few: each beyond the client's idle
connections opens another, ~300 KiB with TLS, kept after the crowd has queued; 2 queue a
crowd as fast as 4 where the API server is the bound."""
DEFER_SECONDS: Final = 0.1
"""Longest this client lets another process's waiter, ahead of ours in the fitting prefix,
write its grant first before writing ours anyway."""
WATCH_WAIT_SECONDS: Final = 1.0
"""After a refused write, how long to wait for the watch to deliver a newer version before
reading one (a refusal with nothing newer is not a race but a real refusal)."""


@final
class GrantCoordinator:
    """This client's waiters and permits on one object (see the module docstring)."""

    def __init__(self, client: Client, kind: LockKind, namespace: str, name: str) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.waiters: dict[str, Waiter] = {}
        self.holdings = Holdings(client, kind, namespace, name)
        self.writes = 0
        self.conflicts = 0
        self._direct: list[Waiter] = []
        self._wake = anyio.Event()
        self._running = False
        self._ready = anyio.Event()
        self._failure: BaseException | None = None
        self._queue: ClaimQueue | None = None
        self._watch: KindWatch | None = None
        self._broken: KindWatch | None = None
        """A watch the run depends on that failed: the run ends with its error."""
        self._seen_object = False
        self._seen_version: str | None = None
        """The last version of the object handed to :meth:`_on_object`: our own writes reach
        it twice (``observe`` of the answer, then the watch event), and the second changes
        nothing."""
        self._hooked_sessions: set[str] = set()
        self.creating = anyio.Semaphore(CREATING_AT_ONCE)
        """Bounds this client's claim creations in flight on this object."""
        self._deferred: tuple[str, float] | None = None
        """(the other process's request first in the fitting prefix, until when we let it
        write first)."""
        self.finished_claims: set[str] = set()
        """Claims of this client that wait for nothing any more (granted and released,
        or abandoned), until their deletion is seen: our own plans skip them at once."""

    def __repr__(self) -> str:
        return (
            f"<GrantCoordinator {self.kind.kind.kind} {self.namespace}/{self.name} "
            f"waiters={len(self.waiters)} permits={len(self.holdings.permits)}>"
        )

    # -- setup ---------------------------------------------------------------------------

    async def start(self) -> ClaimQueue:
        """Watch the object and its claims (once); returns the synced claim queue."""
        if self._watch is None:
            watch = await self.client.watch(self.kind.kind, self.namespace)
            if self._watch is None:
                self._watch = watch
                self.holdings.watch = watch
                watch.add_listener(self._on_object)
                watch.add_failure_listener(self._on_watch_failed)
        while self._queue is None:
            self._ensure_running()
            ready = self._ready
            await ready.wait()
            if self._queue is None and self._failure is not None:
                raise self._failure
        return self._queue

    def _ensure_running(self) -> None:
        if not self._running:
            self._running = True
            self._failure = None
            self.client.spawn(self._run)

    @property
    def watch(self) -> KindWatch:
        assert self._watch is not None
        return self._watch

    def current(self) -> KObject | None:
        return self.watch.get(self.name, self.namespace)

    def resource(self, obj: KObject) -> str:
        """The fencing resource name: ``<Kind>/<namespace>/<name>@<uid>``."""
        return f"{self.kind.kind.kind}/{self.namespace}/{self.name}@{obj.uid}"

    def _hook(self, session: Session) -> None:
        if session.name in self._hooked_sessions:
            return
        self._hooked_sessions.add(session.name)

        def lost(reason: str) -> None:
            self._hooked_sessions.discard(session.name)
            for waiter in list(self.waiters.values()) + self._direct:
                if waiter.session is session and not waiter.writing:
                    waiter.finish(RESTART)
            self.holdings.session_lost(session.name, reason)

        session.on_lost(lost)

    # -- waiters -------------------------------------------------------------------------

    def add(self, waiter: Waiter) -> None:
        self._ensure_running()  # (it may have ended, idle, since start() returned)
        if waiter.direct:
            self._direct.append(waiter)
        else:
            self.waiters[waiter.request.id] = waiter
        if waiter.session.lost:
            # Lost before it got here (a process frozen between its claim's create and the
            # answer: its renewer ran first on the thaw), so the loss callbacks ran without
            # it, and a waiter whose claim is reaped is never planned for again.
            waiter.finish(RESTART)
        else:
            self._hook(waiter.session)
        self._wake.set()

    def remove(self, waiter: Waiter) -> None:
        if waiter.direct:
            with contextlib.suppress(ValueError):
                self._direct.remove(waiter)
        elif self.waiters.get(waiter.request.id) is waiter:
            del self.waiters[waiter.request.id]
        self._wake.set()

    # -- the object watch ----------------------------------------------------------------

    def _on_object(self, etype: str, obj: KObject) -> None:
        if obj.name != self.name or obj.namespace != self.namespace:
            return
        version = obj.resource_version if etype != "DELETED" else None
        if version is not None and version == self._seen_version:
            return  # (a version is one state: judged and planned on already)
        self._seen_version = version
        self._wake.set()
        self.holdings.on_object(etype, obj)

    def _on_watch_failed(self, exc: APIError) -> None:
        # The next start() watches anew (the client replaces a failed shared watch); the
        # run ends, telling its waiters (no version will come to plan on).
        self._broken = self._watch
        self._watch = None
        self.holdings.watch = None
        self.holdings.watch_failed(f"cannot watch the object any more: {exc}")
        self._wake.set()

    def _on_claims_failed(self, exc: APIError) -> None:
        # No claim will be seen any more (ours neither): nothing could be planned.
        self._broken = self._queue.watch if self._queue is not None else None
        self._wake.set()

    def _on_claim(self, etype: str, obj: KObject) -> None:
        if etype == "DELETED":
            self.finished_claims.discard(obj.name)
        self._wake.set()

    # -- the planner/writer task ---------------------------------------------------------

    async def _run(self) -> None:
        failure: BaseException | None = None
        # A claim watch that failed was the last run's; a failed object watch nobody has
        # replaced (only start() watches anew) ends this run at once with its error: a run
        # spawned by add() after the failure could plan on nothing.
        self._broken = None if self._watch is not None else self._broken
        try:
            async with claim_queue(self.client, self.kind.kind, self.name) as queue:
                remove = queue.watch.add_listener(self._on_claim)
                remove_failed = queue.watch.add_failure_listener(self._on_claims_failed)
                self._queue = queue
                self._ready.set()
                try:
                    await self._loop()
                finally:
                    remove()
                    remove_failed()
        except Exception as exc:
            # Told to the waiters (below) and to the next start(); never raised into the
            # client's task group, which would take its watches and renewers down with it.
            log.debug("%r: stopped: %s", self, exc)
            failure = self._failure = exc
        except BaseException:
            failure = self._failure = RuntimeError("the client was closed")
            raise
        finally:
            # One synchronous block: a start() after it spawns a new run.
            self._queue = None
            self._running = False
            ready, self._ready = self._ready, anyio.Event()
            ready.set()
            if failure is not None:  # not the idle exit: nobody is left to serve them
                for waiter in [*self.waiters.values(), *self._direct]:
                    waiter.finish(failure)

    async def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            wake = self._wake = anyio.Event()
            if self._broken is not None:
                self._broken.raise_if_failed()
            try:
                await self._step()
            except Exception as exc:  # a bug must fail the waiters, not hang them
                log.exception("%r: planning failed", self)
                for waiter in [*self.waiters.values(), *self._direct]:
                    if not waiter.writing:
                        waiter.finish(exc)
            if self.waiters or self._direct:
                idle_since = None
                deferred = self._deferred
                delay = None if deferred is None else deferred[1] - anyio.current_time()
                with anyio.move_on_after(delay):
                    await wake.wait()
                continue
            now = anyio.current_time()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= LINGER_SECONDS:
                return
            with anyio.move_on_after(LINGER_SECONDS - (now - idle_since)):
                await wake.wait()

    def _requests(
        self, queue: ClaimQueue, granted: set[str], directs: list[Waiter]
    ) -> Iterator[planning.Request]:
        """The queue in service order, lazily, without claims granted already; then the
        claimless attempts, if (and only if) no claim is waiting."""
        waiting = False
        limit = 32
        start = 0
        while True:
            chunk = queue.ordered(limit)[start:]
            for claim in chunk:
                if claim.name in granted or claim.name in self.finished_claims:
                    continue
                waiting = True
                local = self.waiters.get(claim.name)
                yield local.request if local is not None else planning.Request.of_claim(claim)
            if len(chunk) + start < limit:
                break
            start, limit = limit, limit * 4
        if not waiting:
            yield from (w.request for w in directs)

    async def _step(self) -> None:
        queue = self._queue
        obj = self.current()
        if queue is None:
            return
        if obj is None:
            if self._seen_object:
                gone = NotFoundError(
                    f"{self.kind.kind.kind} {self.namespace}/{self.name} was deleted while waiting",
                    status=404,
                )
                for waiter in [*self.waiters.values(), *self._direct]:
                    if not waiter.writing:
                        waiter.finish(gone)
            return
        self._seen_object = True
        if not self.waiters and not self._direct:
            # Nothing of ours to plan for (woken by a version while idle); a deferral to
            # another process's waiter starts afresh once we have one.
            self._deferred = None
            return
        directs = [w for w in self._direct if w.outcome is None and not w.writing]
        if directs and self.waiters:
            # Our own claims are queued (maybe not delivered by the watch yet): a later
            # claimless attempt of this client must not overtake them.
            for direct in directs:
                direct.finish(REJECTED)
            directs = []
        held = grants(obj.status)
        granted = {g.claim for g in held if g.claim}

        def ready(key: str) -> bool:
            # Only the prefix is ever asked: the cost does not grow with the queue.
            waiter = self.waiters.get(key)
            return (
                waiter is not None
                and waiter.outcome is None
                and not waiter.writing
                and queue.seen(key)
                and not waiter.session.lost
            )

        plan = planning.plan(
            self.kind,
            obj.spec,
            obj.status,
            self._requests(queue, granted, directs),
            preempt_for=ready,
        )
        by_id = {w.request.id: w for w in directs if not w.session.lost}
        mine = self._first_run(plan, by_id, ready)
        placed = {w.request.id for w, _ in mine}
        for direct in directs:
            if direct.session.lost:
                direct.finish(RESTART)
            elif direct.request.id not in placed:
                direct.finish(REJECTED)
        for p in plan.grants:
            expired = self.waiters.get(p.request)
            if expired is not None and expired.outcome is None and expired.session.lost:
                expired.finish(RESTART)  # (also done by the session's loss callback)
        if plan.head is not None and ready(plan.head) and plan.preempt:
            await self._ask(obj, self.waiters[plan.head], plan.preempt)
        if mine:
            await self._grant(obj, mine[: self._batch_size(held, mine)])

    def _first_run(
        self,
        plan: planning.Plan,
        by_id: dict[str, Waiter],
        ready: Callable[[str], bool],
    ) -> list[tuple[Waiter, planning.Placement]]:
        """Our placements to write now: the run of them at the front of the fitting prefix.

        When another process's waiter comes first, it writes first (we would only lose the
        race to it, a refused write for nothing): we wait for its grant to show, up to
        :data:`DEFER_SECONDS` (it may be stalled or gone), then write anyway.
        """
        mine: list[tuple[Waiter, planning.Placement]] = []
        for placement in plan.grants:
            waiter = by_id.get(placement.request)
            if waiter is None and ready(placement.request):
                waiter = self.waiters[placement.request]
            if waiter is None:
                if mine:
                    break  # ours first: the rest of the prefix goes next round
                first = placement.request
                now = anyio.current_time()
                if self._deferred is None or self._deferred[0] != first:
                    self._deferred = (first, now + DEFER_SECONDS)
                if now < self._deferred[1]:
                    return []
                continue  # it did not write in time: go ahead of it
            mine.append((waiter, placement))
        self._deferred = None
        return mine

    @staticmethod
    def _batch_size(held: list[Any], mine: list[tuple[Waiter, planning.Placement]]) -> int:
        """How many of ``mine`` one write may add (the admission policy's CEL budget)."""
        wide = sum(1 for g in held if g.weight > 1)
        total = len(held)
        count = 0
        for _, placement in mine:
            count += 1
            wide += placement.weight > 1
            total += 1
            cost = count * wide + (total if placement.weight > 1 else 0) * count
            if count > 1 and (count > MAX_NEW_PER_WRITE or cost > PAIR_BUDGET):
                return count - 1
        return count

    # -- writes ----------------------------------------------------------------------------

    async def _grant(self, obj: KObject, mine: list[tuple[Waiter, planning.Placement]]) -> None:
        client = self.client
        user = await client.whoami()
        holder = client.identity.holder
        now = rfc3339(client.clock.now())
        entries: list[tuple[int, dict[str, Any]]] = []
        bounds: list[int | None] = []
        drop: set[int] = set()
        for waiter, placement in mine:
            entry = {
                "weight": placement.weight,
                "session": waiter.session.name,
                "creator": user,
                "grantedAt": now,
                **grant_fields(waiter.request, holder),
            }
            if not waiter.direct:
                entry["claim"] = waiter.request.id
            bound = None
            if placement.burst:
                ttl = waiter.session.ttl
                bound = min(ttl, burst_seconds(obj.spec)) if ttl > 0 else burst_seconds(obj.spec)
                entry.update(burst=True, ttlSeconds=bound, renewCount=0)
            entries.append((placement.slot, entry))
            bounds.append(bound)
            drop |= waiter.asked
            waiter.writing = True
        ops, tokens = planning.grant_patch(obj, entries, drop_requests=drop)
        sent = client.clock.monotonic()
        try:
            written = await json_patch_status(
                client.store, self.kind.kind, self.namespace, self.name, ops
            )
        except BaseException as exc:
            for waiter, _ in mine:
                waiter.writing = False
                if isinstance(exc, Exception) and waiter.session.lost:
                    # Its session ended while we wrote: the loss callback passed over it
                    # (it was writing), so nobody else will send it to start over.
                    waiter.finish(RESTART)
            if isinstance(exc, InvalidObjectError | ConflictError):
                self.conflicts += 1
                for waiter, _ in mine:
                    if waiter.direct:
                        # One try only: a claimless attempt that lost a race queues (or,
                        # nowait, would block) instead of joining a storm of retries.
                        waiter.finish(REJECTED)
                await self._after_refusal(obj, exc, [w for w, _ in mine if not w.direct])
            elif isinstance(exc, NotFoundError):
                for waiter, _ in mine:
                    waiter.finish(exc)
            elif isinstance(exc, APIError) and exc.status in (0, 429, 500, 502, 503, 504):
                await anyio.sleep(backoff(1, base=0.1, cap=1.0))
                self._wake.set()
            elif isinstance(exc, APIError):
                for waiter, _ in mine:
                    waiter.finish(exc)
            else:
                raise
            return
        self.writes += 1
        self.watch.observe(written)
        for (waiter, placement), token, bound in zip(mine, tokens, bounds, strict=True):
            waiter.writing = False
            granted = Granted(
                slot=placement.slot,
                weight=placement.weight,
                token=token,
                burst=placement.burst,
                sent=sent,
                resource_version=written.resource_version,
                ttl_seconds=bound,
            )
            waiter.asked = frozenset()
            if waiter.session.lost:
                waiter.finish(RESTART)  # the loss callback passed over it while it wrote
            if waiter.abandoned or waiter.outcome is not None:
                # Its caller is gone (cancelled, or its session ended meanwhile): give the
                # grant back; nobody else could have been granted these slots.
                spawn_quietly(client, self.holdings.give_back, granted)
            else:
                waiter.finish(granted)

    async def _after_refusal(self, obj: KObject, exc: APIError, waiters: list[Waiter]) -> None:
        """A refused grant: normally a lost race (the watch brings the newer version and
        the next step plans on it). If no newer version exists, it was a real refusal."""
        stale = rv_int(obj.resource_version)
        with anyio.move_on_after(WATCH_WAIT_SECONDS):
            while True:
                changed = self.watch.next_change(self.name, self.namespace)
                seen = self.current()
                if seen is None or rv_int(seen.resource_version) > stale:
                    return
                await changed.wait()
        try:
            fresh = await self.client.store.get(self.kind.kind, self.namespace, self.name)
        except APIError:
            return
        if rv_int(fresh.resource_version) > stale:
            self.watch.observe(fresh)
            self._wake.set()
            return
        log.warning("%r: grant refused on an unchanged object: %s", self, exc)
        for waiter in waiters:
            waiter.finish(exc)

    async def _ask(self, obj: KObject, head: Waiter, tokens: tuple[int, ...]) -> None:
        """Ask holders to yield to the head (a request per holder, by its token)."""
        user = await self.client.whoami()
        request = {
            "creator": user,
            "session": head.session.name,
            "claim": head.request.id,
            "priority": head.request.priority,
        }
        ops = planning.request_patch(obj.status, dict.fromkeys(tokens, request))
        try:
            written = await json_patch_status(
                self.client.store, self.kind.kind, self.namespace, self.name, ops
            )
        except APIError as exc:
            log.debug("%r: preemption request not written: %s", self, exc)
            return
        head.asked |= frozenset(tokens)
        self.watch.observe(written)

    async def withdraw(self, waiter: Waiter) -> None:
        """Remove the preemption requests ``waiter`` made (it leaves, or starts over)."""
        if not waiter.asked:
            return
        tokens, waiter.asked = set(waiter.asked), frozenset()
        for _ in range(3):
            obj = self.current()
            if obj is None:
                return
            ops = planning.withdraw_patch(obj.status, tokens)
            if not ops:
                return
            try:
                await json_patch_status(
                    self.client.store, self.kind.kind, self.namespace, self.name, ops
                )
                return
            except InvalidObjectError:
                continue  # one was removed meanwhile (moot): retry on what is left
            except APIError:
                return


_COORDINATORS = PerClient[tuple[str, str, str], GrantCoordinator]()


def coordinator(client: Client, kind: LockKind, namespace: str, name: str) -> GrantCoordinator:
    """The coordinator of one object, shared by every front object of this client."""
    key = (kind.kind.kind, namespace, name)
    return _COORDINATORS.get(client, key, lambda: GrantCoordinator(client, kind, namespace, name))

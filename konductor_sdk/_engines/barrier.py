"""What one process does at one barrier: combined arrivals, serialized transitions, waiting.

Many parties of one process (tasks sharing a :class:`~konductor_sdk.Client`) arriving at
once would each run a CAS loop on the same object and lose most races: n parties cost
O(n^2) writes. A :class:`Site` combines them: arrivals queue up and one background flusher
writes all that are pending in a single CAS (the pure ``arrive`` applied to each in turn),
so the number of contending writers is the number of processes, not of parties. The write
that completes the count still writes ``phase: Open`` itself. Waiters' own transitions
(advance, last call, timeout) go through one lock per site and re-read the cache first, so
a spec change does not send every waiting task of a process to the server at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, final

import anyio
import attrs

from konductor_sdk._kernel.batching import Batcher, PerClient
from konductor_sdk._kernel.cas import CasResult, ensure_exists, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import APIError, BarrierFailed, BarrierTimeout, NotFoundError
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._kernel.waiting import caught_up, newest, wait_any
from konductor_sdk._machines import barrier as state

log = logging.getLogger("konductor_sdk.barrier")

Mutation = Callable[[KObject], state.Status | None]

# How long a shielded clean-up (withdrawing an arrival) may take before it is abandoned;
# the arrival then expires by its TTL like that of a dead party.
CLEANUP_SECONDS = 10.0


@attrs.define
class ArrivalRequest:
    """One party's arrival, queued for the next combined write."""

    key: str
    entry: dict[str, Any]
    after_generation: int
    done: anyio.Event = attrs.Factory(anyio.Event)
    cancelled: bool = False
    result: state.ArriveResult | None = None
    cas: CasResult | None = None
    error: BaseException | None = None


@attrs.define
class Joined:
    """The arrival a party is waiting on."""

    key: str
    generation: int
    acquired_at: str
    uid: str
    since: float
    """Monotonic time the party saw its generation waiting: its timeout counts from here."""
    scope: anyio.CancelScope
    seen: KObject | None = None
    """The object as this party's arrival left it. The shared watch may still be older
    (it may have been listing while the arrival was written): views older than this one
    are never judged, or a party could think its own arrival was removed."""
    deadline: float | None = None
    """Monotonic time of the next timed action the party waits for (timeout, last call)."""
    lost: str | None = None
    wake: anyio.Event = attrs.Factory(anyio.Event)


def stamped(mutate: Mutation) -> Mutation:
    """``mutate`` that also records the spec generation its decision was made on."""

    def apply(obj: KObject) -> state.Status | None:
        new = mutate(obj)
        if new is not None:
            new["observedGeneration"] = obj.generation
        return new

    return apply


@final
class Site:
    """The parties of one client at one barrier object."""

    def __init__(self, client: Client, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self._arrivals = Batcher[ArrivalRequest](client, self._flush)
        self._lock = anyio.Lock()
        self._ensure_lock = anyio.Lock()
        self._exists = False
        self._view: tuple[tuple[str, str], state.View] | None = None

    def __repr__(self) -> str:
        return f"<Site barrier {self.namespace}/{self.name} pending={len(self._arrivals)}>"

    def _now(self) -> str:
        return rfc3339(self.client.clock.now())

    # --- arrivals ----------------------------------------------------------------------

    async def ensure(self, spec: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        """Create the object with ``spec`` unless it exists; once per site, not per party
        (64 parties arriving together would otherwise each try to create it)."""
        async with self._ensure_lock:
            if not self._exists:
                await ensure_exists(
                    self.client, BARRIER, self.namespace, self.name, spec, labels=labels
                )
                self._exists = True

    def forget_existence(self) -> None:
        """The object turned out to be gone: the next :meth:`ensure` creates it again."""
        self._exists = False

    async def arrive(self, request: ArrivalRequest) -> None:
        """Queue ``request`` and wait until a combined write recorded it (or failed).

        If the caller is cancelled, its arrival never stays: a request not yet written is
        dropped, one being written is withdrawn by the flusher, one already written is
        withdrawn here (shielded).
        """
        self._arrivals.submit(request)
        try:
            await request.done.wait()
        except BaseException:
            request.cancelled = True
            if request.done.is_set() and request.error is None and request.result is not None:
                with anyio.CancelScope(shield=True):
                    await self.withdraw(request.key, None, _stored_acquired_at(request))
            raise
        if request.error is not None:
            raise request.error

    async def _flush(self, batch: list[ArrivalRequest]) -> None:
        now = self._now()
        decided: dict[int, state.ArriveResult] = {}

        def mutate(obj: KObject) -> state.Status | None:
            decided.clear()
            status: state.Status | None = None
            for request in batch:
                if request.cancelled:
                    continue  # cancelled before this attempt: do not write it at all
                result = state.arrive(
                    obj.spec,
                    status if status is not None else obj.status,
                    key=request.key,
                    entry=request.entry,
                    after_generation=request.after_generation,
                    now=now,
                )
                decided[id(request)] = result
                if result.status is not None:
                    status = result.status
            return status

        try:
            async with self._lock:
                cas = await update_status(
                    self.client, BARRIER, self.namespace, self.name, stamped(mutate)
                )
        except BaseException as exc:
            # Every caller in the batch gets the error (the client closing: a plain one).
            error = exc if isinstance(exc, Exception) else RuntimeError("the client was closed")
            for request in batch:
                request.error = error
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            # The write may have landed with its answer lost: nobody will renew those.
            await self.withdraw_all([(r.key, None, str(r.entry["acquiredAt"])) for r in batch])
            return
        orphans = []
        for request in batch:
            request.result = decided.get(id(request))
            request.cas = cas
            if request.cancelled and request.result is not None:
                orphans.append(request)  # its caller is gone: nobody would renew it
            request.done.set()
        if orphans:
            await self.withdraw_all([(r.key, None, _stored_acquired_at(r)) for r in orphans])

    async def withdraw(self, key: str, generation: int | None, acquired_at: str) -> bool:
        """Remove ``key``'s arrival if its generation still waits (bounded; never raises)."""
        return await self.withdraw_all([(key, generation, acquired_at)])

    async def withdraw_all(self, arrivals: list[tuple[str, int | None, str]]) -> bool:
        """Remove the arrivals ``(key, generation, acquiredAt)`` that are still waiting, in
        one write (bounded to ``CLEANUP_SECONDS``; never raises). Whether any was removed."""

        def mutate(obj: KObject) -> state.Status | None:
            status: state.Status | None = None
            for key, generation, acquired_at in arrivals:
                new = state.leave(
                    obj.spec,
                    status if status is not None else obj.status,
                    key=key,
                    generation=generation,
                    acquired_at=acquired_at,
                )
                status = new if new is not None else status
            return status

        with anyio.move_on_after(CLEANUP_SECONDS):
            try:
                # A fresh read: the cache may not show an arrival whose answer was lost.
                fresh = await self.client.store.get(BARRIER, self.namespace, self.name)
                cas = await self.transition(mutate, current=fresh)
            except NotFoundError:
                return False
            except APIError as exc:
                keys = ", ".join(key for key, _, _ in arrivals)
                log.warning("%r: could not withdraw %s (will expire): %s", self, keys, exc)
                return False
            return cas.wrote
        return False

    async def transition(self, mutate: Mutation, current: KObject | None = None) -> CasResult:
        """One CAS transition, one at a time per site, starting from the newest view."""
        async with self._lock:
            watch = self.client.cached_watch(BARRIER, self.namespace)
            cached = watch.get(self.name, self.namespace) if watch is not None else None
            return await update_status(
                self.client,
                BARRIER,
                self.namespace,
                self.name,
                stamped(mutate),
                current=newest(cached, current),
            )

    # --- waiting -------------------------------------------------------------------------

    def view(self, obj: KObject) -> state.View:
        """``state.view`` of ``obj``, computed once per version for all parties here."""
        version = (obj.uid, obj.resource_version)
        if self._view is None or self._view[0] != version:
            self._view = (version, state.view(obj.spec, obj.status))
        return self._view[1]

    async def await_outcome(self, joined: Joined) -> int:
        """Wait until ``joined``'s generation concludes; its index, or raise."""
        watch = await self.client.watch(BARRIER, self.namespace)
        latest = joined.seen
        windows: dict[tuple[int, int], float] = {}
        while True:
            changed = watch.next_change(self.name, self.namespace)
            lost = joined.lost
            if lost is not None:
                latest = await self._get()  # the cache may lag behind the loss
                if latest is None:
                    raise BarrierFailed(f"barrier {self.namespace}/{self.name} was deleted")
            cached = watch.get(self.name, self.namespace)
            latest = caught_up(cached, latest)
            obj = newest(cached, latest)
            if obj is None or obj.uid != joined.uid:
                obj = await self._get()
                if obj is None or obj.uid != joined.uid:
                    raise BarrierFailed(f"barrier {self.namespace}/{self.name} was deleted")
            seen = self.view(obj)
            out = state.outcome_of(seen.status, key=joined.key, generation=joined.generation)
            if out.state == state.OPENED:
                assert out.index is not None
                return out.index
            if out.state != state.PENDING:
                raise self.failure(joined.key, out)
            if lost is not None:
                raise BarrierFailed(
                    f"barrier {self.namespace}/{self.name}: party {joined.key} lost its "
                    f"arrival: {lost}",
                    arrived=tuple(obj.status.get("arrivals") or ()),
                )
            delay = await self._step(joined, obj, seen, windows)
            if delay == 0:
                continue  # something was written: the cache has it (observe)
            await wait_any(changed, joined.wake, delay=delay)

    async def _get(self) -> KObject | None:
        try:
            return await self.client.store.get(BARRIER, self.namespace, self.name)
        except NotFoundError:
            return None

    async def _step(
        self,
        joined: Joined,
        obj: KObject,
        seen: state.View,
        windows: dict[tuple[int, int], float],
    ) -> float | None:
        """Do what is due on ``obj`` for a pending party: a write (returns 0) or nothing
        (returns how long until something is due; ``None``: only a change can help)."""
        now, wall = self.client.clock.monotonic(), self._now()
        if seen.advance_due:
            cas = await self.transition(lambda o: state.advance(o.spec, o.status, now=wall), obj)
            if cas.wrote:
                return 0
        deadlines: list[float] = []
        timeout = seen.timeout
        if timeout is not None:
            due = joined.since + timeout
            if now < due:
                deadlines.append(due)
            else:
                message = (
                    f"not opened within spec.timeoutSeconds={timeout:g} "
                    f"(judged by party {joined.key})"
                )
                generation = joined.generation
                cas = await self.transition(
                    lambda o: state.fail(
                        o.spec,
                        o.status,
                        generation=generation,
                        reason=state.TIMEOUT,
                        message=message,
                        now=wall,
                    ),
                    obj,
                )
                # Not written: the fresh object has concluded; the watch will bring it.
                return 0 if cas.wrote else None
        episode = seen.last_call
        if episode is not None:
            due = windows.setdefault(episode, now) + seen.last_call_seconds
            if now < due:
                deadlines.append(due)
            else:
                gen, number = episode
                cas = await self.transition(
                    lambda o: state.open_last_call(
                        o.spec, o.status, generation=gen, episode=number, now=wall
                    ),
                    obj,
                )
                return 0 if cas.wrote else None
        joined.deadline = min(deadlines) if deadlines else None
        return joined.deadline - now if joined.deadline is not None else None

    def failure(self, key: str, out: state.Outcome) -> BarrierFailed:
        """The error a party gets for a generation that did not open for it."""
        where = f"barrier {self.namespace}/{self.name} generation {out.generation}"
        if out.state == state.REMOVED:
            why = "opened without this party" if out.reason == state.OPEN else "is still waiting"
            return BarrierFailed(
                f"{where} {why}: the arrival of party {key} was removed (left, or reaped "
                "after its ttl without renewal)",
                arrived=out.arrived,
            )
        if out.state == state.UNKNOWN:
            return BarrierFailed(
                f"{where} concluded while this party was not looking and its outcome is no "
                "longer recorded (status.previous/history moved on)"
            )
        arrived = ", ".join(out.arrived) or "none"
        missing = ", ".join(out.missing) or "none"
        cls = BarrierTimeout if out.reason == state.TIMEOUT else BarrierFailed
        return cls(
            f"{where} failed ({out.reason}): {out.message}; arrived: {arrived}; missing: {missing}",
            arrived=out.arrived,
            missing=out.missing,
        )


def _stored_acquired_at(request: ArrivalRequest) -> str:
    # The entry as stored: an idempotent arrival kept the earlier entry of this party.
    stored = request.result.entry if request.result is not None else request.entry
    return str(stored.get("acquiredAt", ""))


_SITES = PerClient[tuple[str, str], Site]()


def site(client: Client, namespace: str, name: str) -> Site:
    """The one :class:`Site` of ``client`` at barrier ``namespace/name``."""
    return _SITES.get(client, (namespace, name), lambda: Site(client, namespace, name))

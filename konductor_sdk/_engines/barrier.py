"""What one process does at one barrier: combined arrivals, departures, one waiting loop.

**Arrivals are combined.** Parties of one process (tasks sharing a
:class:`~konductor_sdk.Client`) that arrive together are written in **one** CAS on the
barrier's counters (``arrived``, ``arrivedBy[user]``, ``nextIndex``, a ``recent`` record
of the batch), so the writers contending for the object are the processes, not the
parties. The write that reaches ``expected`` opens the generation itself: releasing is one
write plus one watch event. The batch's parties take indices ``[first, first + k)``; then
one arrival claim records their names under this process's session (in the background:
nobody waits for it).

**Waiting is one loop per process and barrier** (:meth:`LocalParties._watch`): it reads
each new version of the object once, tells every waiting party its outcome (its rank is its
index minus the departed indices below it), and makes the timed writes of the process —
a last-call window that ran out, a timeout, an ``expected`` that was lowered — one process
at a time, on its own monotonic clock.

**Departures** (``leave()``, a cancelled wait, a party whose session was lost) are combined
too: one CAS adds the index ranges to ``departed`` and lowers the counters.

**Lost answers.** An arrival write whose answer never came may have been applied. The
batch is then looked up in ``status.recent``; the write is retried (same batch id, so
never counted twice) only if the object proves it was not applied.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, final

import anyio
import attrs

from konductor_sdk._engines.barrier_claims import (
    ArrivalClaim,
    Roster,
    create_arrival_claims,
    delete_arrival_claims,
    list_arrival_claims,
)
from konductor_sdk._kernel.batching import Batcher, PerClient
from konductor_sdk._kernel.cas import CasResult, ensure_exists, update_status
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import (
    APIError,
    BarrierFailed,
    BarrierTimeout,
    ConflictExhausted,
    ForbiddenError,
    InvalidObjectError,
    NotFoundError,
)
from konductor_sdk._kernel.objects import BARRIER, CLAIM, KObject
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.sessions import Session, sessions_of
from konductor_sdk._kernel.waiting import caught_up, newest, wait_any
from konductor_sdk._machines import barrier as state
from konductor_sdk._machines import barrier_outcome as outcomes

log = logging.getLogger("konductor_sdk.barrier")

Mutation = Callable[[KObject], state.Status | None]

CLEANUP_SECONDS: Final = 10.0
"""Longest a shielded clean-up (withdrawing an arrival) may take; after that the arrival
is withdrawn by the operator when this process's session ends."""
UNBOUNDED: Final = 1 << 30
"""Attempts of a CAS that must not fail because others write too (arrivals, departures)."""
LOST_ANSWER_RETRIES: Final = 5


@attrs.define(eq=False)
class Party:
    """One party of this process at the barrier, from its arrival to its outcome."""

    name: str
    ttl: int
    done: anyio.Event = attrs.Factory(anyio.Event)
    """Set when the arrival was recorded (or failed: ``error``)."""
    cancelled: bool = False
    error: BaseException | None = None
    generation: int = 0
    index: int = -1
    uid: str = ""
    session: Session | None = None
    batch: ArrivalBatch | None = None
    settled: anyio.Event = attrs.Factory(anyio.Event)
    """Set when the outcome is known: ``rank``, or ``failure``."""
    rank: int | None = None
    failure: BarrierFailed | None = None
    writes: int = 0
    attempts: int = 0


@attrs.define(eq=False)
class ArrivalBatch:
    """The parties of one arrival write, and their claims."""

    id: str
    generation: int
    first_index: int
    parties: list[Party]
    session: Session
    uid: str
    claims: list[KObject] = attrs.Factory(list)
    claims_made: anyio.Event = attrs.Factory(anyio.Event)
    finished: set[int] = attrs.Factory(set)
    """Indices whose party no longer waits (settled or departed)."""
    departed: set[int] = attrs.Factory(set)


@attrs.define(eq=False)
class Departure:
    """Withdraw index ranges of one generation (combined with others of this process)."""

    generation: int
    spans: list[tuple[int, int]]
    user: str
    done: anyio.Event = attrs.Factory(anyio.Event)
    cancelled: bool = False
    error: BaseException | None = None
    removed: bool = False


def stamped(mutate: Mutation) -> Mutation:
    """``mutate`` that also records the spec generation its decision was made on."""

    def apply(obj: KObject) -> state.Status | None:
        new = mutate(obj)
        if new is not None:
            new["observedGeneration"] = obj.generation
        return new

    return apply


@final
class LocalParties:
    """The parties of one client at one barrier object."""

    def __init__(self, client: Client, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self._arrivals = Batcher[Party](client, self._flush_arrivals)
        self._departures = Batcher[Departure](client, self._flush_departures)
        self._lock = anyio.Lock()
        self._ensure_lock = anyio.Lock()
        self._exists = False
        self._waiting: set[Party] = set()
        self._watching = False
        self._wake = anyio.Event()
        self._latest: KObject | None = None
        self._view: tuple[tuple[str, str], outcomes.View] | None = None
        self._first_seen: dict[tuple[str, int], float] = {}
        self._windows: dict[tuple[str, int, int], float] = {}
        self._batches: list[ArrivalBatch] = []
        self.roster = Roster()
        self.deadline: tuple[int, float] | None = None
        """``(generation, monotonic time)`` of this process's next timed write there."""

    def __repr__(self) -> str:
        return (
            f"<LocalParties barrier {self.namespace}/{self.name} "
            f"waiting={len(self._waiting)} arriving={len(self._arrivals)}>"
        )

    def _now(self) -> str:
        return rfc3339(self.client.clock.now())

    # --- the object ------------------------------------------------------------------

    async def ensure(self, spec: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        """Create the object with ``spec`` unless it exists; once per process, not per
        party (64 parties arriving together would otherwise each try to create it)."""
        async with self._ensure_lock:
            if not self._exists:
                await ensure_exists(
                    self.client, BARRIER, self.namespace, self.name, spec, labels=labels
                )
                self._exists = True

    def forget_existence(self) -> None:
        """The object turned out to be gone: the next :meth:`ensure` creates it again."""
        self._exists = False

    def _cached(self) -> KObject | None:
        watch = self.client.cached_watch(BARRIER, self.namespace)
        return watch.get(self.name, self.namespace) if watch is not None else None

    def _saw(self, obj: KObject, *, own: bool = True) -> None:
        """Start the timeout stopwatch of ``obj``'s generation on first sight and, if this
        process wrote or read it (``own``), remember it until the watch has caught up."""
        if own:
            self._latest = newest(self._latest, obj)
        s = obj.status
        generation, next_index = s.get("generation"), s.get("nextIndex")
        waiting = s.get("phase", state.WAITING) == state.WAITING
        if isinstance(generation, int) and isinstance(next_index, int) and next_index and waiting:
            self._first_seen.setdefault((obj.uid, generation), self.client.clock.monotonic())

    async def transition(self, mutate: Mutation, current: KObject | None = None) -> CasResult:
        """One CAS transition, one at a time per process, starting from the newest view."""
        async with self._lock:
            result = await update_status(
                self.client,
                BARRIER,
                self.namespace,
                self.name,
                stamped(mutate),
                current=newest(self._cached(), current, self._latest),
            )
        self._saw(result.object)
        return result

    # --- arriving ------------------------------------------------------------------------

    async def arrive(self, party: Party) -> None:
        """Queue ``party`` and wait until a combined write recorded it (or failed).

        If the caller is cancelled its arrival never stays: a party not yet written is
        dropped, one being written is withdrawn by the flusher, one already written is
        withdrawn here (shielded).
        """
        self._arrivals.submit(party)
        try:
            await party.done.wait()
        except BaseException:
            party.cancelled = True
            if party.done.is_set() and party.error is None:
                with anyio.CancelScope(shield=True):
                    await self.withdraw([party])
            raise
        if party.error is not None:
            raise party.error

    async def _flush_arrivals(self, batch: list[Party]) -> None:
        try:
            user = await self.client.whoami()
            by_ttl: dict[int, list[Party]] = {}
            for party in batch:
                by_ttl.setdefault(party.ttl, []).append(party)
            for ttl, parties in by_ttl.items():
                await self._write_arrivals(parties, ttl, user)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RuntimeError("the client was closed")
            for party in batch:
                if not party.done.is_set():
                    party.error = error
                    party.done.set()
            if not isinstance(exc, Exception):
                raise

    async def _write_arrivals(self, parties: list[Party], ttl: int, user: str) -> None:
        remaining = parties
        while remaining:
            members = [p for p in remaining if not p.cancelled]
            if not members:
                return
            session = await sessions_of(self.client).get(ttl)
            recorded = await self._write_batch(members, session, user)
            if recorded is None:
                return  # every member got its error
            arrival, cas = recorded
            taken = members[: arrival.count]
            remaining = members[arrival.count :]
            if not taken:
                if arrival.status is None:
                    error = BarrierFailed(
                        f"barrier {self.namespace}/{self.name}: generation "
                        f"{arrival.generation} has no arrival index left (status.nextIndex)"
                    )
                    for party in remaining:
                        party.error = error
                        party.done.set()
                    return
                continue  # the write opened a generation that was due; arrive in the next
            if session.lost:
                # Nothing is granted under a session whose deadline passed (the operator
                # may already be withdrawing it): withdraw, and arrive with a fresh one.
                await self._withdraw_unannounced(arrival, user)
                remaining = taken + remaining
                continue
            await self._record(arrival, cas, taken, session)

    async def _write_batch(
        self, members: list[Party], session: Session, user: str
    ) -> tuple[state.Arrival, CasResult] | None:
        """One arrival write for ``members`` (retried on the watched version as long as it
        conflicts); ``None`` if it failed (each member has its error)."""
        batch_id = secrets.token_hex(8)
        decided: list[state.Arrival] = []
        now = self._now()

        def mutate(obj: KObject) -> state.Status | None:
            arrival = state.arrive(
                obj.spec,
                obj.status,
                batch=batch_id,
                count=len(members),
                session=session.name,
                user=user,
                now=now,
            )
            decided[:] = [arrival]
            return arrival.status

        error: BaseException | None = None
        result: tuple[state.Arrival, CasResult] | None = None
        for attempt in range(LOST_ANSWER_RETRIES + 1):
            try:
                cas = await update_status(
                    self.client,
                    BARRIER,
                    self.namespace,
                    self.name,
                    stamped(mutate),
                    max_attempts=UNBOUNDED,
                    current=newest(self._cached(), self._latest),
                )
            except (NotFoundError, InvalidObjectError, ForbiddenError) as exc:
                error = exc  # a definite answer: nothing was written
                break
            except (APIError, OSError, TimeoutError) as exc:
                error = exc
                if not decided or decided[0].count == 0:
                    continue  # nothing to count twice: just write again
                known = await self._lost_answer(batch_id, decided[0], attempt)
                if known is None:
                    continue  # proven not applied: write again (same batch id)
                if isinstance(known, BaseException):
                    error = known
                    break
                result = known
                break
            result = (decided[0], cas)
            break
        if result is None:
            assert error is not None
            for member in members:
                member.error = error
                member.done.set()
            return None
        for member in members:
            member.attempts += result[1].attempts
            member.writes += int(result[1].wrote)
        self._saw(result[1].object)
        return result

    async def _lost_answer(
        self, batch_id: str, tried: state.Arrival, attempt: int
    ) -> tuple[state.Arrival, CasResult] | BaseException | None:
        """After an arrival write whose answer was lost: the arrival as recorded, ``None``
        if it was provably not applied, or the error to give its parties."""
        await anyio.sleep(backoff(attempt + 1, base=0.1, cap=2.0))
        try:
            fresh = await self.client.store.get(BARRIER, self.namespace, self.name)
        except NotFoundError as exc:
            return exc
        except APIError:
            return None if attempt < LOST_ANSWER_RETRIES else BarrierFailed("lost answer")
        applied = state.arrival_applied(
            fresh.status, batch=batch_id, generation=tried.generation, first_index=tried.first_index
        )
        if applied is False:
            return None
        record = state.find_batch(fresh.status, batch_id)
        if applied is None or record is None:
            return BarrierFailed(
                f"barrier {self.namespace}/{self.name}: an arrival write's answer was lost "
                f"and it can no longer be told whether it was recorded (more than "
                f"{state.RECENT_LIMIT} arrival batches since); if it was, its parties count "
                f"in generation {tried.generation} without waiting"
            )
        arrival = state.Arrival(
            None, int(record["generation"]), int(record["firstIndex"]), int(record["count"]), True
        )
        return arrival, CasResult(fresh, 1, wrote=True, sent=None)

    async def _record(
        self, arrival: state.Arrival, cas: CasResult, taken: list[Party], session: Session
    ) -> None:
        batch = ArrivalBatch(
            id=secrets.token_hex(4),
            generation=arrival.generation,
            first_index=arrival.first_index,
            parties=taken,
            session=session,
            uid=cas.object.uid,
        )
        self._batches.append(batch)
        names = [p.name for p in taken]
        status = cas.object.status
        if status.get("generation") == arrival.generation and status.get("phase") == state.WAITING:
            # Its parties will wait: they are announced (named, and tied to this session
            # for the operator) before anyone is told they arrived.
            await self._make_claims(batch, names)
        else:
            self.client.spawn(self._make_claims, batch, names)  # it opened: nobody waits
        orphans = []
        for offset, party in enumerate(taken):
            party.generation = arrival.generation
            party.index = arrival.first_index + offset
            party.uid = cas.object.uid
            party.session = session
            party.batch = batch
            session.holds += 1  # kept on close until the party is done (detached arrivals)
            if party.cancelled:
                orphans.append(party)  # its caller is gone: withdraw it
            else:
                self._waiting.add(party)
            party.done.set()
        self._start_watching()
        if orphans:
            self.client.spawn(self.withdraw, orphans)
        if len(self._batches) > 1:
            self.client.spawn(self._collect, batch.generation)

    async def _withdraw_unannounced(self, arrival: state.Arrival, user: str) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
            request = Departure(arrival.generation, [(arrival.first_index, arrival.count)], user)
            self._departures.submit(request)
            await request.done.wait()

    async def _make_claims(self, batch: ArrivalBatch, names: list[str]) -> None:
        try:
            batch.claims = await create_arrival_claims(
                self.client,
                batch.session,
                self.name,
                batch.uid,
                batch.generation,
                batch.first_index,
                names,
            )
        except APIError as exc:
            # The arrival counts anyway; its session (in status.recent) still lets the
            # operator withdraw it if this process dies while the generation waits.
            log.warning("%r: could not create the arrival claim: %s", self, exc)
        finally:
            batch.claims_made.set()
        self.roster.add(ArrivalClaim.of(c) for c in batch.claims)

    async def _collect(self, generation: int) -> None:
        """Delete this process's claims that are no longer needed: those of generations
        before ``generation`` whose parties are all done, and those whose parties all
        departed."""
        done = [
            b
            for b in self._batches
            if b.claims_made.is_set()
            and len(b.finished) == len(b.parties)
            and (b.generation < generation or len(b.departed) == len(b.parties))
        ]
        if not done:
            return
        self._batches = [b for b in self._batches if b not in done]
        await delete_arrival_claims(self.client, [c for b in done for c in b.claims])

    # --- departing -----------------------------------------------------------------------

    async def withdraw(self, parties: Sequence[Party]) -> bool:
        """Withdraw the arrivals of ``parties`` if their generation still waits (bounded to
        :data:`CLEANUP_SECONDS`; never raises). Whether any was withdrawn."""
        by_generation: dict[int, list[tuple[int, int]]] = {}
        for party in parties:
            if party.index >= 0:
                by_generation.setdefault(party.generation, []).append((party.index, 1))
        if not by_generation:
            return False
        removed = False
        requests: dict[int, Departure] = {}
        with anyio.move_on_after(CLEANUP_SECONDS):
            try:
                user = await self.client.whoami()
            except APIError as exc:
                log.warning("%r: could not withdraw (its session will): %s", self, exc)
                return False
            requests.update({g: Departure(g, spans, user) for g, spans in by_generation.items()})
            for request in requests.values():
                self._departures.submit(request)
            for request in requests.values():
                await request.done.wait()
                removed = removed or request.removed
        for party in parties:
            mine = requests.get(party.generation)
            self._finish(party, departed=mine is not None and mine.removed)
        return removed

    async def _flush_departures(self, batch: list[Departure]) -> None:
        now = self._now()
        flags: dict[int, bool] = {}

        def mutate(obj: KObject) -> state.Status | None:
            flags.clear()
            current: state.Status | None = None
            for request in batch:
                base = current if current is not None else obj.status
                new = state.depart(
                    obj.spec,
                    base,
                    generation=request.generation,
                    spans=request.spans,
                    user=request.user,
                    now=now,
                )
                flags[id(request)] = new is not None and new.get("phase") == state.WAITING
                current = new if new is not None else current
            return current

        try:
            cas = await update_status(
                self.client,
                BARRIER,
                self.namespace,
                self.name,
                stamped(mutate),
                max_attempts=UNBOUNDED,
                current=newest(self._cached(), self._latest),
            )
            self._saw(cas.object)
        except BaseException as exc:
            for request in batch:
                request.error = exc
                request.done.set()
            if isinstance(exc, APIError):
                log.warning("%r: could not withdraw arrivals (their session will): %s", self, exc)
                return
            raise
        for request in batch:
            request.removed = cas.wrote and flags.get(id(request), False)
            request.done.set()
        self._wake.set()

    def _finish(self, party: Party, *, departed: bool = False) -> None:
        self._waiting.discard(party)
        batch = party.batch
        if batch is not None and party.index not in batch.finished:
            batch.finished.add(party.index)
            if departed:
                batch.departed.add(party.index)
            batch.session.holds = max(0, batch.session.holds - 1)
            if departed and len(batch.departed) == len(batch.parties):
                self.client.spawn(self._collect, batch.generation)

    # --- waiting -------------------------------------------------------------------------

    async def wait(self, party: Party) -> int:
        """Wait until ``party``'s generation concludes; its rank, or raise.

        A cancelled waiter withdraws its arrival (shielded, bounded) unless the generation
        concluded first.
        """
        try:
            await party.settled.wait()
        except BaseException:
            if not party.settled.is_set():
                with anyio.CancelScope(shield=True):
                    await self.withdraw([party])
            raise
        finally:
            self._finish(party)
        if party.failure is not None:
            raise party.failure
        assert party.rank is not None
        return party.rank

    def _start_watching(self) -> None:
        self._wake.set()
        if not self._watching and self._waiting:
            self._watching = True
            self.client.spawn(self._watch)

    async def _watch(self) -> None:
        try:
            watch = await self.client.watch(BARRIER, self.namespace)
            async with self.client.watching(
                CLAIM, self.namespace, field_selector=target_selector(BARRIER, self.name)
            ) as claims:
                for obj in claims.objects():
                    self.roster.on_event("ADDED", obj)
                remove = claims.add_listener(self.roster.on_event)
                try:
                    while self._waiting:
                        changed = watch.next_change(self.name, self.namespace)
                        self._wake = anyio.Event()
                        delay = await self._step(watch.get(self.name, self.namespace))
                        if delay == 0:
                            continue
                        await wait_any(changed, self._wake, delay=delay)
                finally:
                    remove()
        except Exception as exc:  # never let one barrier break the client's task group
            log.exception("%r: waiting failed", self)
            for party in list(self._waiting):
                self._settle(party, failure=BarrierFailed(f"{self!r}: waiting failed: {exc}"))
        finally:
            self._watching = False
            if self._waiting:
                self._start_watching()

    async def _current(self, cached: KObject | None) -> KObject | None:
        self._latest = caught_up(cached, self._latest)
        obj = newest(cached, self._latest)
        uids = {p.uid for p in self._waiting}
        if obj is None or obj.uid not in uids or cached is None:
            # Not in the cache: deleted, or the watch is still listing; ask.
            try:
                obj = await self.client.store.get(BARRIER, self.namespace, self.name)
            except NotFoundError:
                return None
            self._saw(obj)
        return obj

    async def _step(self, cached: KObject | None) -> float | None:
        """Tell the waiting parties what ``obj`` says, then do what is due: a write
        (returns 0) or nothing (returns how long until something is due)."""
        obj = await self._current(cached)
        for party in list(self._waiting):
            if obj is None or party.uid != obj.uid:
                where = f"barrier {self.namespace}/{self.name}"
                self._settle(party, failure=BarrierFailed(f"{where} was deleted"))
        if obj is None:
            return None
        self._saw(obj, own=False)
        seen = self._view_of(obj)
        for party in list(self._waiting):
            out = outcomes.outcome_of(seen.status, generation=party.generation, index=party.index)
            if out.state == outcomes.OPENED:
                assert out.rank is not None
                self._settle(party, rank=out.rank)
            elif out.state != outcomes.PENDING:
                self._settle(party, failure=self.failure(party, out, seen.status))
        lost = [p for p in self._waiting if p.session is not None and p.session.lost]
        if lost:
            await self._give_up(lost)
            return 0
        return await self._due(obj, seen)

    def _view_of(self, obj: KObject) -> outcomes.View:
        version = (obj.uid, obj.resource_version)
        if self._view is None or self._view[0] != version:
            self._view = (version, outcomes.view(obj.spec, obj.status))
        return self._view[1]

    def _settle(
        self, party: Party, *, rank: int | None = None, failure: BarrierFailed | None = None
    ) -> None:
        self._waiting.discard(party)
        if not party.settled.is_set():
            party.rank, party.failure = rank, failure
            party.settled.set()

    async def _give_up(self, parties: list[Party]) -> None:
        reasons = {p.session.lost_reason for p in parties if p.session is not None}
        for party in parties:
            self._waiting.discard(party)
        await self.withdraw(parties)
        for party in parties:
            message = (
                f"barrier {self.namespace}/{self.name}: party {party.name} lost its session "
                f"while waiting ({', '.join(sorted(str(r) for r in reasons))}); its arrival "
                "was withdrawn"
            )
            self._settle(party, failure=BarrierFailed(message))

    async def _due(self, obj: KObject, seen: outcomes.View) -> float | None:
        s = seen.status
        generation = s["generation"]
        mine = [p for p in self._waiting if p.generation == generation and p.uid == obj.uid]
        now, wall = self.client.clock.monotonic(), self._now()
        sessions = [p.session.deadline for p in self._waiting if p.session is not None]
        deadlines = [min(sessions)] if sessions else []
        self.deadline = None
        if not mine:
            return min(deadlines) - now if deadlines else None
        if seen.advance_due and await self._write(
            obj, lambda o: state.advance(o.spec, o.status, now=wall)
        ):
            return 0
        timed: list[float] = []
        if seen.timeout is not None:
            due = self._first_seen.setdefault((obj.uid, generation), now) + seen.timeout
            if now >= due:
                message = (
                    f"not opened within spec.timeoutSeconds={seen.timeout:g} after its first "
                    f"arrival (judged by {self.client.identity.holder})"
                )
                await self.refresh_roster()
                missing = self.roster.missing(s, generation)
                await self._write(
                    obj,
                    lambda o: state.fail(
                        o.spec,
                        o.status,
                        generation=generation,
                        reason=state.TIMEOUT,
                        message=message,
                        missing=missing,
                        now=wall,
                    ),
                )
                return 0
            timed.append(due)
        episode = seen.last_call
        if episode is not None:
            due = self._windows.setdefault((obj.uid, *episode), now) + seen.last_call_seconds
            if now >= due:
                gen, number = episode
                await self._write(
                    obj,
                    lambda o: state.open_last_call(
                        o.spec, o.status, generation=gen, episode=number, now=wall
                    ),
                )
                return 0
            timed.append(due)
        if timed:
            self.deadline = (generation, min(timed))
        deadlines += timed
        return min(deadlines) - now if deadlines else None

    async def _write(self, obj: KObject, mutate: Mutation) -> bool:
        try:
            return (await self.transition(mutate, obj)).wrote
        except ConflictExhausted:
            return False  # others keep writing: look again at what they wrote
        except NotFoundError:
            return True  # deleted: the next look tells the parties

    def failure(
        self, party: Party, out: outcomes.Outcome, status: Mapping[str, Any]
    ) -> BarrierFailed:
        """The error a party gets for a generation that did not open for it."""
        where = f"barrier {self.namespace}/{self.name} generation {out.generation}"
        arrived = tuple(self.roster.arrived(status, out.generation))
        if out.state == outcomes.REMOVED:
            why = "opened without this party" if out.reason == state.OPEN else "went on"
            return BarrierFailed(
                f"{where} {why}: the arrival of party {party.name} was withdrawn (it left, "
                "or its session ended)",
                arrived=arrived,
            )
        if out.state == outcomes.UNKNOWN:
            return BarrierFailed(
                f"{where} concluded while this party was not looking and its outcome is no "
                "longer recorded (status.previous/history moved on)"
            )
        missing = ", ".join(out.missing) or "none"
        cls = BarrierTimeout if out.reason == state.TIMEOUT else BarrierFailed
        shown = ", ".join(arrived[:32]) + (
            f" and {len(arrived) - 32} more" if len(arrived) > 32 else ""
        )
        return cls(
            f"{where} failed ({out.reason}): {out.message}; arrived: {out.arrived} "
            f"({shown or 'names unknown'}); missing: {missing}",
            arrived=arrived,
            missing=out.missing,
        )

    async def refresh_roster(self) -> None:
        """Read the barrier's arrival claims now (before naming who is missing)."""
        try:
            self.roster.add(await list_arrival_claims(self.client, self.namespace, self.name))
        except APIError as exc:
            log.debug("%r: could not list the arrival claims: %s", self, exc)

    def missing_now(self, status: Mapping[str, Any]) -> list[str]:
        """Parties known to be missing from the current generation (for ``reset``)."""
        generation = status.get("generation")
        return self.roster.missing(status, generation) if isinstance(generation, int) else []


_PARTIES = PerClient[tuple[str, str], LocalParties]()


def parties_at(client: Client, namespace: str, name: str) -> LocalParties:
    """The one :class:`LocalParties` of ``client`` at barrier ``namespace/name``."""
    return _PARTIES.get(client, (namespace, name), lambda: LocalParties(client, namespace, name))

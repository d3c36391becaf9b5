"""What one process does at one barrier: combined arrivals, departures, one waiting loop.

**Arrivals are combined.** Parties of one process (tasks sharing a
:class:`~konductor_sdk.Client`) that arrive together are written in **one** CAS on the
barrier's counters (``arrived``, ``arrivedBy[user]``, ``nextIndex``, a ``recent`` record
of the batch), so the writers contending for the object are the processes, not the
parties. The write that reaches ``expected`` opens the generation itself: releasing is one
write plus one watch event. The batch's parties take indices ``[first, first + k)``; one
arrival claim then records their names under this process's session (before they are told
they arrived, unless the write opened the generation: then nobody waits on it).

**Waiting is one loop per process and barrier** (:mod:`.barrier_waiting`).

**Departures** (``leave()``, a cancelled wait, a party whose session was lost) are combined
too: one CAS adds the index ranges to ``departed`` and lowers the counters.

**Lost answers** of arrival writes never count a party twice (:mod:`.barrier_writes`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, final

import anyio

from konductor_sdk._engines.barrier_claims import (
    ArrivalClaim,
    create_arrival_claims,
    delete_arrival_claims,
)
from konductor_sdk._engines.barrier_waiting import ArrivalBatch, Party, WaitingLoop
from konductor_sdk._engines.barrier_writes import (
    ArrivalTarget,
    Departure,
    stamped,
    write_arrival,
    write_departures,
)
from konductor_sdk._kernel.batching import Batcher, PerClient
from konductor_sdk._kernel.cas import CasResult, ensure_exists, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import (
    APIError,
    BarrierFailed,
)
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._kernel.sessions import Session, sessions_of
from konductor_sdk._kernel.waiting import newest
from konductor_sdk._machines import barrier as state
from konductor_sdk._machines import barrier_outcome as outcomes

log = logging.getLogger("konductor_sdk.barrier")

Mutation = Callable[[KObject], state.Status | None]

CLEANUP_SECONDS: Final = 10.0
"""Longest a shielded clean-up (withdrawing an arrival) may take; after that the arrival
is withdrawn by the operator when this process's session ends."""


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
        self._batches: list[ArrivalBatch] = []
        self.waiting = WaitingLoop(
            client, namespace, name, transition=self.transition, withdraw=self.withdraw
        )
        client._add_close_hook(self._finish_claims)

    def _spawn(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Background work of this process at the barrier; dropped once the client is
        closing (what it would do is left to the session's end)."""
        try:
            self.client.spawn(func, *args)  # type: ignore[arg-type]
        except RuntimeError:
            log.debug("%r: client closed, %s not run", self, getattr(func, "__name__", func))

    async def _finish_claims(self) -> None:
        """On close: let the claims being written land (bounded), so the barrier's claims
        name everyone who arrived from this process (they end with its session)."""
        with anyio.move_on_after(CLEANUP_SECONDS):
            for batch in list(self._batches):
                await batch.claims_made.wait()

    def __repr__(self) -> str:
        return (
            f"<LocalParties barrier {self.namespace}/{self.name} "
            f"waiting={len(self.waiting.waiting)} arriving={len(self._arrivals)}>"
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

    async def transition(self, mutate: Mutation, current: KObject | None = None) -> CasResult:
        """One CAS transition, one at a time per process, starting from the newest view."""
        async with self._lock:
            result = await update_status(
                self.client,
                BARRIER,
                self.namespace,
                self.name,
                stamped(mutate),
                current=newest(self._cached(), current, self.waiting.latest),
            )
        self.waiting.saw(result.object)
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
        """One arrival write for ``members``; ``None`` if it failed (each has its error)."""
        target = ArrivalTarget(self.client, self.namespace, self.name, session.name, user)
        try:
            arrival, cas = await write_arrival(
                target,
                batch=secrets.token_hex(8),
                count=len(members),
                now=self._now(),
                current=lambda: newest(self._cached(), self.waiting.latest),
            )
        except Exception as exc:
            for member in members:
                member.error = exc
                member.done.set()
            return None
        for member in members:
            member.attempts += cas.attempts
            member.writes += int(cas.wrote)
        self.waiting.saw(cas.object)
        return arrival, cas

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
        opened = not (
            status.get("generation") == arrival.generation and status.get("phase") == state.WAITING
        )
        if not opened:
            # Its parties will wait: they are announced (named, and tied to this session
            # for the operator) before anyone is told they arrived.
            await self._make_claims(batch, names)
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
            elif opened:
                # This very write opened it: the outcome is known without waiting.
                out = outcomes.outcome(status, generation=party.generation, index=party.index)
                if out.state == outcomes.OPENED:
                    self.waiting.settle(party, rank=out.rank)
                else:
                    self.waiting.add(party)
            else:
                self.waiting.add(party)
            party.done.set()
        if opened:
            self._spawn(self._make_claims, batch, names)  # nobody waits on them
        if orphans:
            self._spawn(self.withdraw, orphans)
        if len(self._batches) > 1:
            self._spawn(self._collect, batch.generation)

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
        self.waiting.roster.add(ArrivalClaim.of(c) for c in batch.claims)

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
        try:
            cas = await write_departures(
                self.client,
                self.namespace,
                self.name,
                batch,
                now=self._now(),
                current=newest(self._cached(), self.waiting.latest),
            )
            self.waiting.saw(cas.object)
        except BaseException as exc:
            for request in batch:
                request.error = exc
                request.done.set()
            if isinstance(exc, Exception):
                log.warning("%r: could not withdraw arrivals (their session will): %s", self, exc)
                return
            raise
        for request in batch:
            request.done.set()
        self.waiting.wake()

    def _finish(self, party: Party, *, departed: bool = False) -> None:
        self.waiting.waiting.discard(party)
        batch = party.batch
        if batch is not None and party.index not in batch.finished:
            batch.finished.add(party.index)
            if departed:
                batch.departed.add(party.index)
            batch.session.holds = max(0, batch.session.holds - 1)
            if departed and len(batch.departed) == len(batch.parties):
                self._spawn(self._collect, batch.generation)

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

    async def refresh_roster(self) -> None:
        """Read the barrier's arrival claims now (before naming who is missing)."""
        await self.waiting.refresh_roster()

    def missing_now(self, status: Mapping[str, Any]) -> list[str]:
        """Parties known to be missing from the current generation (for ``reset``)."""
        return self.waiting.missing_now(status)

    @property
    def deadline(self) -> tuple[int, float] | None:
        """``(generation, monotonic time)`` of this process's next timed write there."""
        return self.waiting.deadline


_PARTIES = PerClient[tuple[str, str], LocalParties]()


def parties_at(client: Client, namespace: str, name: str) -> LocalParties:
    """The one :class:`LocalParties` of ``client`` at barrier ``namespace/name``."""
    return _PARTIES.get(client, (namespace, name), lambda: LocalParties(client, namespace, name))

"""How the parties of one process wait at one barrier: one loop reads each version once.

:class:`WaitingLoop` runs (in the client's task group) while any party of this process
waits at the barrier. For every new version of the object it computes the shared
:class:`~konductor_sdk._machines.barrier_outcome.View` once, tells each waiting party its
outcome (its rank is its index minus the departed indices below it, the same in every
process), and makes this process's timed writes, one at a time, on its own monotonic clock:

* a last-call window that ran out (timed from when this process first saw it);
* ``spec.timeoutSeconds`` after the generation's first arrival, timed from when this
  process first saw the generation started: parties that leave or die do not restart it;
* an ``expected`` that was lowered to what has arrived.

A party whose session is lost while it waits is withdrawn and told. Alongside, the
barrier's arrival claims are watched to learn party names (:class:`Roster`), only to name
the missing ones when a generation fails; a release never waits for that watch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, final

import anyio
import attrs

from konductor_sdk._engines.barrier_claims import Roster, list_arrival_claims
from konductor_sdk._engines.barrier_writes import Mutation
from konductor_sdk._kernel.cas import CasResult
from konductor_sdk._kernel.claims import target_selector
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import (
    APIError,
    BarrierFailed,
    BarrierTimeout,
    ConflictExhausted,
    NotFoundError,
)
from konductor_sdk._kernel.objects import BARRIER, CLAIM, KObject
from konductor_sdk._kernel.sessions import Session
from konductor_sdk._kernel.waiting import caught_up, newest, wait_any
from konductor_sdk._machines import barrier as state
from konductor_sdk._machines import barrier_outcome as outcomes

log = logging.getLogger("konductor_sdk.barrier")

Transition = Callable[[Mutation, KObject | None], Awaitable[CasResult]]
Withdraw = Callable[[Sequence["Party"]], Awaitable[bool]]


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


@final
class WaitingLoop:
    """The waiting parties of one client at one barrier, and the loop that tells them.

    Args:
        transition: makes one CAS transition (serialized with the process's others).
        withdraw: withdraws parties' arrivals (when their session is lost).
    """

    def __init__(
        self,
        client: Client,
        namespace: str,
        name: str,
        *,
        transition: Transition,
        withdraw: Withdraw,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self._transition = transition
        self._withdraw = withdraw
        self.waiting: set[Party] = set()
        self._watching = False
        self._wake = anyio.Event()
        self.latest: KObject | None = None
        """The newest version this process wrote or read (the watch may lag behind)."""
        self._view: tuple[tuple[str, str], outcomes.View] | None = None
        self._first_seen: dict[tuple[str, int], float] = {}
        self._windows: dict[tuple[str, int, int], float] = {}
        self.roster = Roster()
        self.deadline: tuple[int, float] | None = None
        """``(generation, monotonic time)`` of this process's next timed write there."""

    def __repr__(self) -> str:
        return f"<WaitingLoop barrier {self.namespace}/{self.name} waiting={len(self.waiting)}>"

    def _now(self) -> str:
        return rfc3339(self.client.clock.now())

    def saw(self, obj: KObject, *, own: bool = True) -> None:
        """Start the timeout stopwatch of ``obj``'s generation on first sight and, if this
        process wrote or read it (``own``), remember it until the watch has caught up."""
        if own:
            self.latest = newest(self.latest, obj)
        s = obj.status
        generation, next_index = s.get("generation"), s.get("nextIndex")
        waiting = s.get("phase", state.WAITING) == state.WAITING
        if isinstance(generation, int) and isinstance(next_index, int) and next_index and waiting:
            self._first_seen.setdefault((obj.uid, generation), self.client.clock.monotonic())

    def add(self, party: Party) -> None:
        """``party`` waits from now on (its arrival was recorded)."""
        self.waiting.add(party)
        self._start()

    def wake(self) -> None:
        """Look at the object again (something this process wrote may have changed it)."""
        self._wake.set()

    def _start(self) -> None:
        self._wake.set()
        if not self._watching and self.waiting:
            self._watching = True
            try:
                self.client.spawn(self._watch)
            except RuntimeError:  # the client is closed
                self._watching = False
                self._fail_all("the client was closed")

    def _fail_all(self, why: str) -> None:
        for party in list(self.waiting):
            where = f"barrier {self.namespace}/{self.name}"
            self.settle(party, failure=BarrierFailed(f"{where}: {why}"))

    async def _watch(self) -> None:
        """The waiting loop of this process: runs while any of its parties waits."""
        try:
            watch = await self.client.watch(BARRIER, self.namespace)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._follow_claims)  # names only: never holds up a release
                while self.waiting:
                    changed = watch.next_change(self.name, self.namespace)
                    self._wake = anyio.Event()
                    delay = await self._step(watch.get(self.name, self.namespace))
                    if delay == 0:
                        continue
                    await wait_any(changed, self._wake, delay=delay)
                tg.cancel_scope.cancel()
        except Exception as exc:  # never let one barrier break the client's task group
            log.exception("%r: waiting failed", self)
            self._fail_all(f"waiting failed: {exc}")
        except BaseException:
            self._fail_all("the client was closed")
            raise
        finally:
            self._watching = False
        if self.waiting:
            self._start()

    async def _follow_claims(self) -> None:
        """Feed the roster from the barrier's claims while this process waits there."""
        try:
            async with self.client._watching(
                CLAIM, self.namespace, field_selector=target_selector(BARRIER, self.name)
            ) as claims:
                for obj in claims.objects():
                    self.roster.on_event("ADDED", obj)
                remove = claims.add_listener(self.roster.on_event)
                try:
                    await anyio.sleep_forever()
                finally:
                    remove()
        except APIError as exc:
            log.debug("%r: no claims watch (missing parties will not be named): %s", self, exc)

    async def _current(self, cached: KObject | None) -> KObject | None:
        self.latest = caught_up(cached, self.latest)
        obj = newest(cached, self.latest)
        uids = {p.uid for p in self.waiting}
        if obj is None or obj.uid not in uids or cached is None:
            # Not in the cache: deleted, or the watch is still listing; ask.
            try:
                obj = await self.client.store.get(BARRIER, self.namespace, self.name)
            except NotFoundError:
                return None
            self.saw(obj)
        return obj

    async def _step(self, cached: KObject | None) -> float | None:
        """Tell the waiting parties what ``obj`` says, then do what is due: a write
        (returns 0) or nothing (returns how long until something is due)."""
        obj = await self._current(cached)
        for party in list(self.waiting):
            if obj is None or party.uid != obj.uid:
                where = f"barrier {self.namespace}/{self.name}"
                self.settle(party, failure=BarrierFailed(f"{where} was deleted"))
        if obj is None:
            return None
        self.saw(obj, own=False)
        seen = self._view_of(obj)
        # One reader per generation: thousands of parties of one process read one record.
        readers: dict[int, Callable[[int], outcomes.Outcome]] = {}
        for party in list(self.waiting):
            read = readers.get(party.generation)
            if read is None:
                read = readers[party.generation] = outcomes.reader(seen.status, party.generation)
            out = read(party.index)
            if out.state == outcomes.OPENED:
                assert out.rank is not None
                self.settle(party, rank=out.rank)
            elif out.state != outcomes.PENDING:
                self.settle(
                    party,
                    failure=failure_of(
                        f"barrier {self.namespace}/{self.name}",
                        party.name,
                        out,
                        self.roster.arrived(seen.status, out.generation),
                    ),
                )
        lost = [p for p in self.waiting if p.session is not None and p.session.lost]
        if lost:
            await self._give_up(lost)
            return 0
        return await self._due(obj, seen)

    def _view_of(self, obj: KObject) -> outcomes.View:
        version = (obj.uid, obj.resource_version)
        if self._view is None or self._view[0] != version:
            self._view = (version, outcomes.view(obj.spec, obj.status))
        return self._view[1]

    def settle(
        self, party: Party, *, rank: int | None = None, failure: BarrierFailed | None = None
    ) -> None:
        self.waiting.discard(party)
        if not party.settled.is_set():
            party.rank, party.failure = rank, failure
            party.settled.set()

    async def _give_up(self, parties: list[Party]) -> None:
        reasons = {p.session.lost_reason for p in parties if p.session is not None}
        for party in parties:
            self.waiting.discard(party)
        await self._withdraw(parties)
        for party in parties:
            message = (
                f"barrier {self.namespace}/{self.name}: party {party.name} lost its session "
                f"while waiting ({', '.join(sorted(str(r) for r in reasons))}); its arrival "
                "was withdrawn"
            )
            self.settle(party, failure=BarrierFailed(message))

    async def _due(self, obj: KObject, seen: outcomes.View) -> float | None:
        s = seen.status
        generation = s["generation"]
        mine = [p for p in self.waiting if p.generation == generation and p.uid == obj.uid]
        now, wall = self.client.clock.monotonic(), self._now()
        sessions = [p.session.deadline for p in self.waiting if p.session is not None]
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
            return (await self._transition(mutate, obj)).wrote
        except ConflictExhausted:
            return False  # others keep writing: look again at what they wrote
        except NotFoundError:
            return True  # deleted: the next look tells the parties

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


def failure_of(
    barrier: str, party: str, out: outcomes.Outcome, arrived: Sequence[str]
) -> BarrierFailed:
    """The error party ``party`` gets for a generation that did not open for it."""
    where = f"{barrier} generation {out.generation}"
    names = tuple(arrived)
    if out.state == outcomes.REMOVED:
        why = "opened without this party" if out.reason == state.OPEN else "went on"
        return BarrierFailed(
            f"{where} {why}: the arrival of party {party} was withdrawn (it left, or its "
            "session ended)",
            arrived=names,
        )
    if out.state == outcomes.UNKNOWN:
        return BarrierFailed(
            f"{where} concluded while this party was not looking and its outcome is no "
            "longer recorded (status.previous/history moved on)"
        )
    missing = ", ".join(out.missing) or "none"
    cls = BarrierTimeout if out.reason == state.TIMEOUT else BarrierFailed
    shown = ", ".join(names[:32]) + (f" and {len(names) - 32} more" if len(names) > 32 else "")
    return cls(
        f"{where} failed ({out.reason}): {out.message}; arrived: {out.arrived} "
        f"({shown or 'names unknown'}); missing: {missing}",
        arrived=names,
        missing=out.missing,
    )

"""Barrier: parties across the cluster wait for each other, generation after generation.

::

    barrier = Barrier("epoch", expected=8)
    rank = await barrier.wait()        # arrive, then wait until the barrier opens

The barrier's status holds counters, not parties. Arriving is one CAS write of those
counters per process (the parties of a process that arrive together are combined), and the
write that brings the count to ``expected`` also writes ``phase: Open``, so a generation
opens exactly once and releasing costs one write plus one watch event. Each party's rank is
its arrival index minus the indices that left before the opening, computed by every process
alike. Who arrived, and whose session keeps them alive, is in one arrival Claim per process
batch: when a process dies, the operator withdraws its arrivals from the waiting generation.
Timeouts and the last-call window are timed by the waiters themselves on their monotonic
clocks, so a barrier never hangs because the operator is down. See ``docs/barrier.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import attrs

from konductor_sdk._engines.barrier import parties_at
from konductor_sdk._engines.barrier_claims import ArrivalClaim, list_arrival_claims
from konductor_sdk._engines.barrier_waiting import Party
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import (
    AlreadyExistsError,
    BarrierFailed,
    ConfigurationError,
    ConflictError,
    NotFoundError,
)
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._kernel.validate import check_ttl
from konductor_sdk._machines import barrier as state
from konductor_sdk._machines import barrier_ranges as ranges
from konductor_sdk._object_front import ObjectFront


@final
@attrs.frozen
class Arrival:
    """One party's arrival in the current generation, as its arrival claim records it.

    Attributes:
        party: the party's name.
        holder: the process (``Identity.holder``) it arrived from.
        index: its arrival index in the generation (its rank once open, if nobody below it
            left).
        generation: the generation it arrived in.
        arrived_at: when its process's claim was created (wall clock of the API server).
        session: the Session that keeps the arrival alive.
    """

    party: str
    holder: str
    index: int
    generation: int
    arrived_at: str
    session: str


@final
@attrs.frozen
class BarrierStatus:
    """A barrier as read from the server (``spec``, ``status`` and the arrival claims).

    ``arrivals`` and ``parties`` come from the arrival claims that still exist (a process's
    claims are deleted when it arrives again in a later generation, or when its session
    ends); the counters come from the object.
    """

    name: str
    namespace: str
    expected: int
    quorum: int | None
    last_call: float | None
    timeout: float | None
    generation: int
    phase: str
    arrived: int
    arrivals: tuple[Arrival, ...]
    parties: tuple[str, ...]
    missing: tuple[str, ...]
    reason: str
    message: str
    started_at: str | None
    quorum_reached_at: str | None
    opened_at: str | None
    failed_at: str | None
    arrived_by: Mapping[str, int] = attrs.field(factory=dict)
    next_index: int = 0
    departed: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_object(cls, obj: KObject, claims: tuple[ArrivalClaim, ...] = ()) -> BarrierStatus:
        sp = state.parse_spec(obj.spec)
        s = state.normalize(obj.spec, obj.status)
        generation = s["generation"]
        departed = s["departed"]
        arrivals = sorted(
            (
                Arrival(
                    party=party,
                    holder=claim.holder,
                    index=claim.first_index + offset,
                    generation=claim.generation,
                    arrived_at=claim.created,
                    session=claim.session,
                )
                for claim in claims
                if claim.generation == generation
                for offset, party in enumerate(claim.parties)
                if not ranges.contains(departed, claim.first_index + offset)
            ),
            key=lambda a: a.index,
        )
        return cls(
            name=obj.name,
            namespace=obj.namespace,
            expected=sp.expected,
            quorum=sp.quorum,
            last_call=sp.last_call,
            timeout=sp.timeout,
            generation=generation,
            phase=s["phase"],
            arrived=s["arrived"],
            arrivals=tuple(arrivals),
            parties=tuple(a.party for a in arrivals) if s["phase"] != state.WAITING else (),
            missing=tuple(s.get("missing", ())),
            reason=str(s.get("reason", "")),
            message=str(s.get("message", "")),
            started_at=s.get("startedAt"),
            quorum_reached_at=s.get("quorumReachedAt"),
            opened_at=s.get("openedAt"),
            failed_at=s.get("failedAt"),
            arrived_by=dict(s["arrivedBy"]),
            next_index=s["nextIndex"],
            departed=tuple((f, c) for f, c in departed),
        )


@final
@attrs.frozen
class BarrierStatistics:
    """What this :class:`Barrier` instance (one party) has done.

    Attributes:
        party: this party's name (``None`` until first used).
        generation: the generation it has arrived in and not finished, if any.
        index: its arrival index in that generation (its rank if nobody below it leaves).
        opened: waits that returned a rank.
        failed: waits that raised :class:`BarrierFailed` (or a subclass).
        deadline: monotonic time (of the client's clock) at which this party's process
            will fail the generation (timeout) or open it (last call), if one is running.
        writes: arrival writes this party took part in (combined with its process's other
            parties that arrived at the same time).
        attempts: such writes tried (``attempts - writes`` lost a race and were retried).
    """

    party: str | None
    generation: int | None
    index: int | None
    opened: int
    failed: int
    deadline: float | None
    writes: int
    attempts: int


@final
class Barrier(ObjectFront):
    """A cyclic barrier for ``expected`` parties (``threading.Barrier`` across pods).

    Args:
        name: the Barrier object's name.
        expected: parties that open it; ``None`` to join an existing barrier as it is.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        quorum: parties that open it after ``last_call`` seconds (elastic min size).
        last_call: seconds to wait for more parties once ``quorum`` arrived (needs quorum).
        timeout: seconds after a generation's first arrival before it fails, whether or not
            anyone still waits in it.
        ttl: seconds this process's session lives without renewal: a dead process's
            arrivals are withdrawn (by the operator) that long after it stopped.
        party: this party's name (default: unique per instance); should be unique among
            the parties, e.g. ``"rank-3"``. Used to name missing parties.
        labels: labels for the object when this instance creates it.

    Raises:
        ConfigurationError: an argument is out of range (nothing was written).
    """

    KIND = BARRIER

    def __init__(
        self,
        name: str,
        *,
        expected: int | None,
        namespace: str | None = None,
        client: Client | None = None,
        quorum: int | None = None,
        last_call: float | None = None,
        timeout: float | None = None,
        ttl: float = 30,
        party: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, namespace=namespace, client=client)
        self._spec = (
            state.validate_spec(
                expected=expected, quorum=quorum, last_call=last_call, timeout=timeout
            )
            if expected is not None
            else None
        )
        if expected is None and (quorum, last_call, timeout) != (None, None, None):
            raise ConfigurationError("quorum, last_call and timeout need expected")
        self._ttl = check_ttl(ttl)
        if party is not None and (not isinstance(party, str) or not party or len(party) > 253):
            raise ConfigurationError(
                f"party must be a non-empty string of at most 253 characters, got {party!r}"
            )
        self._party = party
        self._labels = dict(labels or {})
        self._joined: Party | None = None
        self._opened = 0
        self._failed = 0
        self._writes = 0
        self._attempts = 0

    def __repr__(self) -> str:
        ns = self._namespace or "?"
        expected = self._spec.expected if self._spec is not None else "?"
        return f"<Barrier {ns}/{self.name} expected={expected} party={self._party!r}>"

    @property
    def party(self) -> str | None:
        """This party's name (assigned on first use if not given)."""
        return self._party

    def statistics(self) -> BarrierStatistics:
        """Counters of this party (no I/O)."""
        joined = self._joined
        deadline = None
        if joined is not None and self._client is not None and self._namespace is not None:
            due = parties_at(self._client, self._namespace, self.name).deadline
            if due is not None and due[0] == joined.generation:
                deadline = due[1]
        return BarrierStatistics(
            party=self._party,
            generation=joined.generation if joined is not None else None,
            index=joined.index if joined is not None else None,
            opened=self._opened,
            failed=self._failed,
            deadline=deadline,
            writes=self._writes + (joined.writes if joined is not None else 0),
            attempts=self._attempts + (joined.attempts if joined is not None else 0),
        )

    async def _connect(self) -> tuple[Client, str]:
        client, ns = await super()._connect()
        if self._party is None:
            self._party = client.identity.new_key()
        return client, ns

    # --- spec ---------------------------------------------------------------------------

    async def create(self, *, exist_ok: bool = False) -> BarrierStatus:
        """Create the Barrier object with this instance's spec.

        Args:
            exist_ok: return the existing object (with its own spec) instead of raising.

        Raises:
            ConfigurationError: this instance was made with ``expected=None``.
            AlreadyExistsError: it exists and ``exist_ok`` is false.
        """
        if self._spec is None:
            raise ConfigurationError("create() needs expected")
        client, ns = await self._connect()
        metadata: dict[str, Any] = {"name": self.name, "namespace": ns}
        if self._labels:
            metadata["labels"] = self._labels
        body = {"metadata": metadata, "spec": self._spec.to_mapping()}
        try:
            obj = await client.store.create(BARRIER, ns, body)
        except AlreadyExistsError:
            if not exist_ok:
                raise
            obj = await client.store.get(BARRIER, ns, self.name)
        return BarrierStatus.from_object(obj)

    async def set_expected(self, expected: int) -> BarrierStatus:
        """Change ``spec.expected``; waiters honour it at once (raising it makes them wait
        for more parties, lowering it to the number arrived opens the barrier).

        Raises:
            ConfigurationError: ``expected`` out of range or below ``spec.quorum``.
        """
        state.validate_spec(expected=expected)
        client, ns = await self._connect()
        for _ in range(16):
            obj = await client.store.get(BARRIER, ns, self.name)
            quorum = state.parse_spec(obj.spec).quorum
            if quorum is not None and expected < quorum:
                raise ConfigurationError(
                    f"expected must be >= spec.quorum ({quorum}) of barrier "
                    f"{ns}/{self.name}, got {expected}"
                )
            patch = {
                "metadata": {"resourceVersion": obj.resource_version},
                "spec": {"expected": expected},
            }
            try:
                written = await client.store.patch(BARRIER, ns, self.name, patch)
            except ConflictError:
                continue  # quorum may have changed under us: check again
            return BarrierStatus.from_object(written)
        raise ConflictError(f"barrier {ns}/{self.name}: spec kept changing", status=409)

    async def status(self) -> BarrierStatus:
        """The barrier as the server has it now, with the arrivals its claims record."""
        client, ns = await self._connect()
        obj = await self._read(fresh=True)
        claims = await list_arrival_claims(client, ns, self.name)
        return BarrierStatus.from_object(obj, tuple(claims))

    async def reset(self) -> bool:
        """Fail the waiting generation (its waiters get :class:`BarrierFailed` with reason
        ``Reset``); the next arrival starts a fresh generation. ``False`` if nobody was
        waiting (or the object does not exist).

        Only the barrier's creator (or a user allowed ``override``) may reset it.
        """
        client, ns = await self._connect()
        message = f"reset() by {client.identity.holder}"
        now = rfc3339(client.clock.now())
        here = parties_at(client, ns, self.name)
        with span("barrier.reset", barrier=self.name, namespace=ns):
            await here.refresh_roster()
            try:
                cas = await here.transition(
                    lambda o: state.reset(
                        o.spec,
                        o.status,
                        now=now,
                        message=message,
                        missing=here.missing_now(o.status),
                    )
                )
            except NotFoundError:
                return False
        self._attempts += cas.attempts
        self._writes += int(cas.wrote)
        return cas.wrote

    # --- arriving and waiting -------------------------------------------------------------

    async def arrive(self) -> int:
        """Record this party in the current generation (or start the next one if the
        current one has concluded); idempotent until the generation is waited for.

        Creates the object with this instance's spec if it does not exist. Parties of one
        client arriving together are recorded in one combined write. Without a following
        :meth:`wait_open` the arrival counts until the generation concludes, or until this
        process's session ends (``ttl`` after the process stopped).

        Returns:
            The generation joined.

        Raises:
            NotFoundError: the object does not exist and ``expected`` was not given.
        """
        if self._joined is not None:
            return self._joined.generation
        client, ns = await self._connect()
        key = self._party
        assert key is not None
        here = parties_at(client, ns, self.name)
        for attempt in (1, 2):
            if self._spec is not None:
                await here.ensure(self._spec.to_mapping(), self._labels)
            party = Party(name=key, ttl=self._ttl)
            try:
                await here.arrive(party)
                break
            except NotFoundError:
                # Deleted since this process last saw it: create it again (once).
                here.forget_existence()
                if attempt == 2 or self._spec is None:
                    raise
        self._joined = party
        return party.generation

    async def leave(self) -> bool:
        """Withdraw this party's arrival while its generation still waits.

        Returns:
            Whether an arrival was withdrawn (``False`` if none, or the barrier concluded).
        """
        joined = self._joined
        if joined is None:
            return False
        client, ns = await self._connect()
        self._joined = None
        self._keep_counts(joined)
        return await parties_at(client, ns, self.name).withdraw([joined])

    async def wait_open(self) -> int:
        """Wait until the generation this party arrived in opens.

        Returns:
            This party's rank in the generation, ``0..arrived-1`` in arrival order.

        Raises:
            BarrierTimeout: ``spec.timeoutSeconds`` passed first (judged by a waiter or
                the operator); names who had and had not arrived.
            BarrierFailed: reset, deleted, or this party's arrival was withdrawn.
            RuntimeError: :meth:`arrive` was not called.
        """
        joined = self._joined
        if joined is None:
            raise RuntimeError(f"{self!r}: wait_open() needs arrive() first")
        client, ns = self._client, self._namespace
        assert client is not None
        assert ns is not None
        try:
            with span("barrier.wait", barrier=self.name, namespace=ns, party=joined.name):
                rank = await parties_at(client, ns, self.name).wait(joined)
        except BarrierFailed:
            self._failed += 1
            raise
        finally:
            if self._joined is joined:
                self._joined = None
            self._keep_counts(joined)
        self._opened += 1
        return rank

    def _keep_counts(self, party: Party) -> None:
        self._writes += party.writes
        self._attempts += party.attempts
        party.writes = party.attempts = 0

    async def wait(self) -> int:
        """:meth:`arrive`, then :meth:`wait_open`; returns this party's rank."""
        await self.arrive()
        return await self.wait_open()

    async def __aenter__(self) -> int:
        return await self.wait()

    async def __aexit__(self, *exc_info: object) -> None:
        return None

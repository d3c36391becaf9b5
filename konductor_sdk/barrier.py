"""Barrier: parties across the cluster wait for each other, generation after generation.

::

    barrier = Barrier("epoch", expected=8)
    rank = await barrier.wait()        # arrive, then wait until the barrier opens

Arriving is one CAS write into ``status.arrivals``; the write that brings the count to
``expected`` also writes ``phase: Open``, so a generation opens exactly once. Waiting is
the shared watch. While it waits, a party renews its arrival, so a dead party's arrival
is reaped (by the operator, after ``ttl``) and stops counting. Timeouts and the last-call
window are timed by the waiters themselves on their monotonic clocks, so a barrier never
hangs because the operator is down. See ``docs/barrier.md`` for the whole design.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, final

import anyio
import attrs

from konductor_sdk._engines.barrier import ArrivalRequest, Joined, site
from konductor_sdk._kernel.cas import read
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.entries import MAX_TTL_SECONDS, MIN_TTL_SECONDS, Renewal, new_entry
from konductor_sdk._kernel.errors import (
    AlreadyExistsError,
    BarrierFailed,
    ConfigurationError,
    ConflictError,
    NotFoundError,
)
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._machines import barrier as state


@final
@attrs.frozen
class Arrival:
    """One party's arrival as stored."""

    party: str
    holder: str
    index: int
    generation: int
    arrived_at: str
    renew_count: int


@final
@attrs.frozen
class BarrierStatus:
    """A barrier as read from the server (``spec`` and ``status`` together)."""

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

    @classmethod
    def from_object(cls, obj: KObject) -> BarrierStatus:
        sp = state.parse_spec(obj.spec)
        s = state.normalize(obj.spec, obj.status)
        arrivals = tuple(
            Arrival(
                party=key,
                holder=str(e.get("holder", "")),
                index=int(e.get("index", -1)),
                generation=int(e.get("generation", s["generation"])),
                arrived_at=str(e.get("arrivedAt", "")),
                renew_count=int(e.get("renewCount", 0)),
            )
            for key, e in sorted(s["arrivals"].items(), key=lambda kv: kv[1].get("index", 0))
        )
        return cls(
            name=obj.name,
            namespace=obj.namespace,
            expected=sp.expected,
            quorum=sp.quorum,
            last_call=sp.last_call,
            timeout=sp.timeout,
            generation=s["generation"],
            phase=s["phase"],
            arrived=s["arrived"],
            arrivals=arrivals,
            parties=tuple(s.get("parties", ())),
            missing=tuple(s.get("missing", ())),
            reason=str(s.get("reason", "")),
            message=str(s.get("message", "")),
            started_at=s.get("startedAt"),
            quorum_reached_at=s.get("quorumReachedAt"),
            opened_at=s.get("openedAt"),
            failed_at=s.get("failedAt"),
        )


@final
@attrs.frozen
class BarrierStatistics:
    """What this :class:`Barrier` instance (one party) has done.

    Attributes:
        party: this party's key in ``status.arrivals`` (``None`` until first used).
        generation: the generation it has arrived in and not finished, if any.
        opened: waits that returned an index.
        failed: waits that raised :class:`BarrierFailed` (or a subclass).
        deadline: monotonic time (of the client's clock) at which this waiting party
            will fail the generation (timeout) or open it (last call), if one is running.
        writes: status writes this party made.
        attempts: status writes tried (``attempts - writes`` lost a race and were retried).
    """

    party: str | None
    generation: int | None
    opened: int
    failed: int
    deadline: float | None
    writes: int
    attempts: int


@final
class Barrier:
    """A cyclic barrier for ``expected`` parties (``threading.Barrier`` across pods).

    Args:
        name: the Barrier object's name.
        expected: parties that open it; ``None`` to join an existing barrier as it is.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        quorum: parties that open it after ``last_call`` seconds (elastic min size).
        last_call: seconds to wait for more parties once ``quorum`` arrived (needs quorum).
        timeout: seconds after a generation's first arrival before it fails.
        ttl: seconds an arrival lives without renewal (a dead party stops counting).
        party: this party's key (default: unique per instance); must be unique among the
            parties, e.g. ``"rank-3"``. Used to name missing parties.
        labels: labels for the object when this instance creates it.

    Raises:
        ConfigurationError: an argument is out of range (nothing was written).
    """

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
        self.name = check_object_name(name)
        if namespace is not None:
            check_object_name(namespace, field="namespace")
        self._spec = (
            state.validate_spec(
                expected=expected, quorum=quorum, last_call=last_call, timeout=timeout
            )
            if expected is not None
            else None
        )
        if expected is None and (quorum, last_call, timeout) != (None, None, None):
            raise ConfigurationError("quorum, last_call and timeout need expected")
        ttl_ok = isinstance(ttl, int | float) and not isinstance(ttl, bool)
        if not ttl_ok or not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            raise ConfigurationError(
                f"ttl must be a number of seconds in {MIN_TTL_SECONDS}..{MAX_TTL_SECONDS}, "
                f"got {ttl!r}"
            )
        if party is not None and (not isinstance(party, str) or not party):
            raise ConfigurationError(f"party must be a non-empty string, got {party!r}")
        self._ttl = math.ceil(ttl)
        self._namespace = namespace
        self._client = client
        self._party = party
        self._labels = dict(labels or {})
        self._joined: Joined | None = None
        self._completed = 0
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
        """This party's key in ``status.arrivals`` (assigned on first use if not given)."""
        return self._party

    def statistics(self) -> BarrierStatistics:
        """Counters of this party (no I/O)."""
        return BarrierStatistics(
            party=self._party,
            generation=self._joined.generation if self._joined is not None else None,
            opened=self._opened,
            failed=self._failed,
            deadline=self._joined.deadline if self._joined is not None else None,
            writes=self._writes,
            attempts=self._attempts,
        )

    # --- plumbing -----------------------------------------------------------------------

    async def _connect(self) -> tuple[Client, str]:
        if self._client is None:
            self._client = default_client()
        client = await self._client.connect()
        if self._namespace is None:
            self._namespace = client.namespace
        if self._party is None:
            self._party = client.identity.new_key()
        return client, self._namespace

    def _now(self, client: Client) -> str:
        return rfc3339(client.clock.now())

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

    async def delete(self) -> bool:
        """Delete the object (waiters get :class:`BarrierFailed`); ``False`` if absent."""
        client, ns = await self._connect()
        try:
            await client.store.delete(BARRIER, ns, self.name)
        except NotFoundError:
            return False
        return True

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
        """The barrier as the server (or the shared watch cache) has it now."""
        client, ns = await self._connect()
        return BarrierStatus.from_object(await read(client, BARRIER, ns, self.name))

    async def reset(self) -> bool:
        """Fail the waiting generation (its waiters get :class:`BarrierFailed` with reason
        ``Reset``); the next arrival starts a fresh generation. ``False`` if nobody was
        waiting (or the object does not exist)."""
        client, ns = await self._connect()
        message = f"reset() by {client.identity.holder}"
        now = self._now(client)
        with span("barrier.reset", barrier=self.name, namespace=ns):
            try:
                cas = await site(client, ns, self.name).transition(
                    lambda o: state.reset(o.spec, o.status, now=now, message=message)
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
        client arriving together are recorded in one combined write.

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
        here = site(client, ns, self.name)
        for attempt in (1, 2):
            if self._spec is not None:
                await here.ensure(self._spec.to_mapping(), self._labels)
            request = ArrivalRequest(key, new_entry(client, self._ttl), self._completed)
            try:
                await here.arrive(request)
                break
            except NotFoundError:
                # Deleted since this process last saw it: create it again (once).
                here.forget_existence()
                if attempt == 2 or self._spec is None:
                    raise
        result, cas = request.result, request.cas
        assert result is not None
        assert cas is not None
        self._attempts += cas.attempts
        self._writes += int(result.status is not None)
        # No await from here until the renewer is spawned: a cancellation in between
        # would leave an arrival that nobody renews or withdraws.
        joined = Joined(
            key=key,
            generation=result.generation,
            acquired_at=str(result.entry.get("acquiredAt", "")),
            uid=cas.object.uid,
            since=client.clock.monotonic(),
            scope=anyio.CancelScope(),
            seen=cas.object,
        )
        self._joined = joined
        renewal = Renewal(
            client=client,
            kind=BARRIER,
            namespace=ns,
            name=self.name,
            path=("status", "arrivals", key),
            expect={"holder": result.entry.get("holder"), "acquiredAt": joined.acquired_at},
            ttl_seconds=self._ttl,
            # The entry was invisible to everyone before its write was sent.
            last_ok_sent=cas.sent if cas.sent is not None else joined.since,
        )
        client.spawn(self._renew, renewal, joined)
        return result.generation

    @staticmethod
    async def _renew(renewal: Renewal, joined: Joined) -> None:
        with joined.scope:
            await renewal.run(functools.partial(_on_lost, joined))

    async def leave(self) -> bool:
        """Withdraw this party's arrival while its generation still waits.

        Returns:
            Whether an arrival was removed (``False`` if none, or the barrier had opened).
        """
        joined = self._joined
        if joined is None:
            return False
        client, ns = await self._connect()
        removed = await site(client, ns, self.name).withdraw(
            joined.key, joined.generation, joined.acquired_at
        )
        joined.scope.cancel()
        self._joined = None
        return removed

    async def wait_open(self) -> int:
        """Wait until the generation this party arrived in opens.

        Returns:
            This party's index in the generation, ``0..arrived-1`` in arrival order.

        Raises:
            BarrierTimeout: ``spec.timeoutSeconds`` passed first (judged by the operator or
                by a waiter); names who had and had not arrived.
            BarrierFailed: reset, deleted, or this party's arrival was removed.
            RuntimeError: :meth:`arrive` was not called.
        """
        joined = self._joined
        if joined is None:
            raise RuntimeError(f"{self!r}: wait_open() needs arrive() first")
        # arrive() connected; no await before the try, or a cancellation there would
        # leave the arrival renewed with nobody waiting on it.
        client, ns = self._client, self._namespace
        assert client is not None
        assert ns is not None
        here = site(client, ns, self.name)
        try:
            with span("barrier.wait", barrier=self.name, namespace=ns, party=joined.key):
                index = await here.await_outcome(joined)
        except BaseException as exc:
            if isinstance(exc, BarrierFailed):
                self._failed += 1
                self._completed = max(self._completed, joined.generation)
            with anyio.CancelScope(shield=True):
                await here.withdraw(joined.key, joined.generation, joined.acquired_at)
            raise
        finally:
            joined.scope.cancel()
            if self._joined is joined:
                self._joined = None
        self._opened += 1
        self._completed = max(self._completed, joined.generation)
        return index

    async def wait(self) -> int:
        """:meth:`arrive`, then :meth:`wait_open`; returns this party's index."""
        await self.arrive()
        return await self.wait_open()

    async def __aenter__(self) -> int:
        return await self.wait()

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _on_lost(joined: Joined, reason: str) -> None:
    joined.lost = reason
    joined.wake.set()

"""Leader election on the built-in ``coordination.k8s.io/v1`` Lease, as client-go does it.

The record lives in ``spec`` (``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``,
``renewTime`` as MicroTime, ``leaseTransitions``; ``strategy``/``preferredHolder`` on newer
servers) and every write is a full update carrying the resourceVersion read, so a Python
replica and a Go controller using ``client-go/tools/leaderelection`` can share one election:

* a candidate may take the lease when ``holderIdentity`` is empty (released), or when the
  record has not changed for ``leaseDurationSeconds`` on the candidate's monotonic clock
  since it first saw that record (client-go's ``observedTime``); taking it writes
  ``leaseTransitions + 1``;
* the holder renews by rewriting ``renewTime`` (same ``acquireTime``/``leaseTransitions``);
* releasing writes ``holderIdentity: ""`` and ``leaseDurationSeconds: 1``, like client-go's
  ``ReleaseOnCancel``.

The fencing token of a term is its ``leaseTransitions``: every acquisition by anyone
following these rules increments it under compare-and-swap. Unlike client-go, a record
naming our own identity that this process did not write is treated like anyone else's
(waited out), so a restarted replica can never overlap its previous incarnation. A term's
``lost`` is read from the clock (its deadline: the send time of its last successful write
plus ``renew_deadline``, or the lease duration minus the safety margin), and a term whose
deadline passed before its acquiring write came back is released instead of led.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, final

import anyio
import attrs

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.entries import ExpiryTracker, safety_margin
from konductor_sdk._kernel.errors import AlreadyExistsError, APIError, ConflictError, NotFoundError
from konductor_sdk._kernel.objects import COORDINATION_LEASE, KObject
from konductor_sdk._kernel.retry import backoff
from konductor_sdk.fencing import FencingToken

log = logging.getLogger("konductor_sdk.election")


@final
@attrs.frozen
class Record:
    """client-go's ``LeaderElectionRecord`` as stored in a Lease's spec."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    lease_transitions: int = 0
    strategy: str | None = None
    preferred_holder: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Record:
        return cls(
            holder_identity=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
            strategy=spec.get("strategy"),
            preferred_holder=spec.get("preferredHolder"),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.lease_transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time is not None:
            spec["renewTime"] = self.renew_time
        if self.strategy:
            spec["strategy"] = self.strategy
        if self.preferred_holder:
            spec["preferredHolder"] = self.preferred_holder
        return spec


def acquired(old: Record | None, *, identity: str, duration: int, now: str) -> Record:
    """The record a new holder writes (client-go: transitions + 1; a new object: 0)."""
    return Record(
        holder_identity=identity,
        lease_duration_seconds=duration,
        acquire_time=now,
        renew_time=now,
        lease_transitions=0 if old is None else old.lease_transitions + 1,
        strategy=None if old is None else old.strategy,
    )


def renewed(old: Record, *, identity: str, duration: int, now: str) -> Record:
    """The holder's renewal: only ``renewTime`` (and the duration) change."""
    return attrs.evolve(
        old, holder_identity=identity, lease_duration_seconds=duration, renew_time=now
    )


def released(old: Record, *, now: str) -> Record:
    """client-go's release: no holder, a 1 s duration, transitions kept."""
    return Record(
        holder_identity="",
        lease_duration_seconds=1,
        acquire_time=now,
        renew_time=now,
        lease_transitions=old.lease_transitions,
        strategy=old.strategy,
    )


def holds(record: Record, *, identity: str, token: int) -> bool:
    """Whether ``record`` is still the term ``token`` of ``identity``."""
    return record.holder_identity == identity and record.lease_transitions == token


def should_yield(record: Record, *, identity: str) -> str | None:
    """Coordinated leader election's handoff signal: a preferred holder that is not us."""
    preferred = record.preferred_holder or ""
    return preferred if preferred and preferred != identity else None


@final
class RecordObserver:
    """Judges expiry like client-go: ``leaseDurationSeconds`` after the record last changed,
    on this observer's monotonic clock; the record's timestamps are never compared."""

    def __init__(self, tracker: ExpiryTracker) -> None:
        self._tracker = tracker

    def observe(self, record: Record) -> None:
        self._tracker.observe("record", record, record.lease_duration_seconds)

    def expired(self) -> bool:
        return self._tracker.expired("record")

    def expires_at(self) -> float | None:
        return self._tracker.expires_at("record")

    def blocked_by(self, record: Record) -> str | None:
        """Why a candidate may not take the lease now (``None``: it may)."""
        if record.holder_identity and not self.expired():
            return f"held by {record.holder_identity}"
        return None


def leader_of(obj: KObject | None) -> str | None:
    if obj is None:
        return None
    return Record.from_spec(obj.spec).holder_identity or None


@final
class CoordinationCandidate:
    """Campaigns for one coordination Lease; :meth:`acquire` returns a held term."""

    kind = COORDINATION_LEASE

    def __init__(
        self,
        client: Client,
        namespace: str,
        name: str,
        *,
        identity: str,
        duration: int,
        poll: float,
        renew_every: float | None = None,
        renew_deadline: float | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.poll = poll
        self.renew_every = renew_every
        self.renew_deadline = renew_deadline
        self.observer = RecordObserver(ExpiryTracker(client.clock))
        self.evaluations = 0

    def leader_of(self, obj: KObject | None) -> str | None:
        return leader_of(obj)

    def _now(self) -> str:
        return rfc3339(self.client.clock.now())

    async def acquire(self) -> CoordinationTerm:
        """Wait until this candidate holds the lease."""
        client, ns, name = self.client, self.namespace, self.name
        store = client.store
        watch = await client.watch(COORDINATION_LEASE, ns)
        while True:
            changed = watch.next_change(name, ns)
            obj = watch.get(name, ns)
            self.evaluations += 1
            old = None if obj is None else Record.from_spec(obj.spec)
            if old is not None:
                self.observer.observe(old)
                if self.observer.blocked_by(old) is not None:
                    await self._wait(changed)
                    continue
            new = acquired(old, identity=self.identity, duration=self.duration, now=self._now())
            sent = client.clock.monotonic()
            try:
                if obj is None:
                    body = {"metadata": {"name": name, "namespace": ns}, "spec": new.to_spec()}
                    written = await store.create(COORDINATION_LEASE, ns, body)
                else:
                    written = await store.replace(COORDINATION_LEASE, _with_spec(obj, new))
            except (ConflictError, AlreadyExistsError):
                # Someone wrote first; judge again on what they wrote.
                with contextlib.suppress(NotFoundError):
                    watch.observe(await store.get(COORDINATION_LEASE, ns, name))
                continue
            watch.observe(written)
            term = CoordinationTerm(self, written, new, sent)
            if term.lost:
                # The write came back after the term's deadline: never lead on it.
                log.info("%r: acquired too late (%s); releasing", term, term.lost_reason)
                await term.release()
                continue
            return term

    async def _wait(self, changed: anyio.Event) -> None:
        timeout = self.poll
        at = self.observer.expires_at()
        if at is not None:
            timeout = min(timeout, max(0.0, at - self.client.clock.monotonic()) + 0.01)
        with anyio.move_on_after(timeout):
            await changed.wait()


def _with_spec(obj: KObject, record: Record) -> dict[str, Any]:
    body = dict(obj.raw)
    body["spec"] = record.to_spec()
    return body


@final
class CoordinationTerm:
    """One term as holder of a coordination Lease; ``token`` is its ``leaseTransitions``."""

    def __init__(
        self, campaign: CoordinationCandidate, obj: KObject, record: Record, sent: float
    ) -> None:
        self.campaign = campaign
        self.holder = campaign.identity
        self.token = record.lease_transitions
        self.renewals = 0
        self._client = campaign.client
        self._obj = obj
        self._record = record
        self._last_ok_sent = sent
        self._interval = campaign.renew_every or max(campaign.duration / 3.0, 0.05)
        self._renew_deadline = campaign.renew_deadline
        self._lost_reason: str | None = None
        self._released = False

    def __repr__(self) -> str:
        c = self.campaign
        return (
            f"<CoordinationTerm {c.namespace}/{c.name} token={self.token} holder={self.holder!r}>"
        )

    @property
    def lost(self) -> bool:
        """True once the term ended: its deadline passed (read from the clock now), or the
        record was found taken, released or deleted."""
        if (
            self._lost_reason is None
            and not self._released
            and self._client.clock.monotonic() >= self.deadline
        ):
            self._lose(f"not renewed before its deadline ({self.campaign.duration}s lease)")
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        self.lost  # noqa: B018 - reads the clock
        return self._lost_reason

    @property
    def fencing(self) -> FencingToken:
        """The term's token (``leaseTransitions``) for :class:`konductor_sdk.Fence`."""
        c = self.campaign
        return FencingToken(
            f"Lease.coordination.k8s.io/{c.namespace}/{c.name}@{self._obj.uid}", (0,), self.token
        )

    def _lose(self, reason: str) -> bool:
        if self._lost_reason is not None:
            return False
        self._lost_reason = reason
        log.info("%r: %s", self, reason)
        return True

    @property
    def deadline(self) -> float:
        duration = self.campaign.duration
        budget = duration - safety_margin(duration)
        if self._renew_deadline is not None:
            budget = min(budget, self._renew_deadline)
        return self._last_ok_sent + budget

    async def _keep(self, on_lost: Callable[[str], None]) -> None:
        if self.lost:
            on_lost(self._lost_reason or "lost")
            return
        async with anyio.create_task_group() as tg:

            def lose(reason: str) -> None:
                if not self._released and (self._lose(reason) or self._lost_reason):
                    on_lost(self._lost_reason or reason)
                tg.cancel_scope.cancel()

            tg.start_soon(self._renew_loop, lose)
            tg.start_soon(self._watch_loop, lose)

    async def _renew_loop(self, lose: Callable[[str], None]) -> None:
        clock, store, c = self._client.clock, self._client.store, self.campaign
        failures = 0
        while True:
            wait = self._interval if failures == 0 else backoff(failures, 0.1, self._interval)
            await anyio.sleep(max(0.0, min(wait, self.deadline - clock.monotonic())))
            remaining = self.deadline - clock.monotonic()
            if remaining <= 0 or self.lost:
                lose(f"no successful renewal before the deadline ({c.duration}s lease)")
                return
            new = renewed(self._record, identity=self.holder, duration=c.duration, now=c._now())
            sent = clock.monotonic()
            try:
                with anyio.fail_after(remaining):
                    written = await store.replace(COORDINATION_LEASE, _with_spec(self._obj, new))
                    failures = 0
            except ConflictError:
                try:
                    with anyio.fail_after(max(0.0, self.deadline - clock.monotonic())):
                        fresh = await store.get(COORDINATION_LEASE, c.namespace, c.name)
                except NotFoundError:
                    lose("the Lease object was deleted")
                    return
                except (APIError, TimeoutError):
                    failures += 1
                    continue
                current = Record.from_spec(fresh.spec)
                if not holds(current, identity=self.holder, token=self.token):
                    lose(f"taken over by {current.holder_identity or 'nobody'}")
                    return
                self._obj, self._record = fresh, current  # e.g. a label edit; renew again
                continue
            except NotFoundError:
                lose("the Lease object was deleted")
                return
            except (APIError, TimeoutError) as exc:
                failures += 1
                log.debug("%r: renewal failed: %s", self, exc)
                continue
            self.renewals += 1
            self._obj, self._record = written, new
            if not self.lost:
                self._last_ok_sent = sent
            watch = self._client.cached_watch(COORDINATION_LEASE, c.namespace)
            if watch is not None:
                watch.observe(written)

    async def _watch_loop(self, lose: Callable[[str], None]) -> None:
        try:
            await self._watch_record(lose)
        except APIError as exc:
            # The shared watch failed (forbidden, or the server unreachable past the
            # client's retry budget): a takeover could no longer be seen, so stop trusting.
            lose(f"cannot watch the Lease any more: {exc}")

    async def _watch_record(self, lose: Callable[[str], None]) -> None:
        c = self.campaign
        watch = await self._client.watch(COORDINATION_LEASE, c.namespace)
        while True:
            changed = watch.next_change(c.name, c.namespace)
            obj = watch.get(c.name, c.namespace)
            if obj is None:
                lose("the Lease object was deleted")
                return
            current = Record.from_spec(obj.spec)
            if not holds(current, identity=self.holder, token=self.token):
                lose(f"taken over by {current.holder_identity or 'nobody'}")
                return
            preferred = should_yield(current, identity=self.holder)
            if preferred is not None:
                lose(f"yielding to preferred holder {preferred}")
                return
            await changed.wait()

    async def release(self) -> None:
        """Write client-go's released record if this term still holds it; idempotent."""
        if self._released:
            return
        self._released = True
        c = self.campaign
        store = self._client.store
        obj = self._obj
        with anyio.CancelScope(shield=True), anyio.move_on_after(c.duration):
            for attempt in range(1, 9):
                current = Record.from_spec(obj.spec)
                if not holds(current, identity=self.holder, token=self.token):
                    return
                try:
                    written = await store.replace(
                        COORDINATION_LEASE, _with_spec(obj, released(current, now=c._now()))
                    )
                except ConflictError:
                    await anyio.sleep(backoff(attempt, base=0.005, cap=0.25))
                    obj = await store.get(COORDINATION_LEASE, c.namespace, c.name)
                    continue
                except NotFoundError:
                    return
                watch = self._client.cached_watch(COORDINATION_LEASE, c.namespace)
                if watch is not None:
                    watch.observe(written)
                return

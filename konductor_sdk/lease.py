"""Lease: a singleton section across processes, with fencing tokens and fast handoff.

::

    lease = Lease("scheduler", ttl=15)
    async with lease as held:           # waits, then holds; renewed in the background
        await run(fencing_token=held.token)

The Lease object holds one holder entry and the fencing counter; each waiting candidate is
a ``Claim`` of its own, so any number of candidates can wait (see
:mod:`konductor_sdk._engines.lease_campaign`). A waiter takes over an unreleased lease
only after the holder's entry has not changed for its ``ttlSeconds`` on the *waiter's*
monotonic clock; the holder gives up ``safety_margin`` earlier, counted from when it *sent*
its last successful renewal, so it always stops first. Layout, guarantees and
non-guarantees: ``docs/lease.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, final

import anyio
import attrs

from konductor_sdk._engines.lease_campaign import LeaseRequest, acquire_lease
from konductor_sdk._engines.lease_held import HeldLease, LeaseCounters
from konductor_sdk._kernel.cas import ensure_exists
from konductor_sdk._kernel.claims import order_key, target_selector
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.clock import parse_rfc3339
from konductor_sdk._kernel.errors import APIError, LeadershipLost
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import CLAIM, LEASE, KObject
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._kernel.validate import check_priority, check_ttl
from konductor_sdk._machines import lease as state

log = logging.getLogger("konductor_sdk.lease")

__all__ = ["CandidateInfo", "HeldLease", "Lease", "LeaseStatistics", "LeaseStatus"]


@final
@attrs.frozen
class CandidateInfo:
    """A candidate waiting for the lease (one ``Claim``).

    Attributes:
        holder: the identity it will hold the lease as.
        priority: its priority (higher is served first).
        key: the name of its Claim.
    """

    holder: str
    priority: int
    key: str


@final
@attrs.frozen
class LeaseStatus:
    """The lease as stored on the server (see ``docs/lease.md``).

    ``token`` is the current holder's fencing token; ``fencing_token`` the last one issued.
    ``candidates`` are the waiting candidates (Claims) in service order. Times are the
    writers' wall clocks, for humans only.
    """

    name: str
    namespace: str
    ttl_seconds: int
    holder: str | None
    key: str | None
    token: int | None
    renew_count: int | None
    acquired_at: dt.datetime | None
    renewed_at: dt.datetime | None
    fencing_token: int
    transitions: int
    preferred_holder: str | None
    candidates: tuple[CandidateInfo, ...]

    @classmethod
    def from_object(cls, obj: KObject, claims: tuple[KObject, ...] = ()) -> LeaseStatus:
        status = state.normalize(obj.spec, dict(obj.status))
        current = state.holder_entry(status)
        entry: Mapping[str, Any] = current[1] if current else {}
        candidates = tuple(
            CandidateInfo(str(c.spec.get("holder", "")), int(c.spec.get("priority", 0)), c.name)
            for c in sorted(claims, key=order_key)
            if not c.deleting
        )
        return cls(
            name=obj.name,
            namespace=obj.namespace,
            ttl_seconds=state.ttl_of(obj.spec),
            holder=str(entry["holder"]) if current else None,
            key=current[0] if current else None,
            token=int(entry["token"]) if current else None,
            renew_count=int(entry.get("renewCount", 0)) if current else None,
            acquired_at=_time(entry.get("acquiredAt")),
            renewed_at=_time(entry.get("renewedAt")),
            fencing_token=int(status["fencingToken"]),
            transitions=int(status["transitions"]),
            preferred_holder=status["preferredHolder"] or None,
            candidates=candidates,
        )


def _time(text: object) -> dt.datetime | None:
    return parse_rfc3339(text) if isinstance(text, str) and text else None


@final
@attrs.frozen
class LeaseStatistics:
    """What this :class:`Lease` object did in this process (for humans and tests).

    Attributes:
        held: acquisitions currently held through this object.
        waiting: callers currently waiting.
        acquisitions / releases / losses: totals; a loss is a lease that ended while held
            (expired, taken away, deleted, or yielded to a higher-priority candidate).
        evaluations: times a waiter looked at the lease state to decide.
    """

    held: int
    waiting: int
    acquisitions: int
    releases: int
    losses: int
    evaluations: int


@final
class Lease:
    """A named lease: at most one holder at a time, each with a strictly larger token.

    Args:
        name: the Lease object's name (created on first use with ``spec.ttlSeconds=ttl``).
        ttl: seconds the holder's entry may go without renewal before a waiter may take
            over; renewals happen every ``ttl/3``. Whole seconds in ``[1, 86400]``.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        priority: in ``[-1000000, 1000000]``; waiting candidates are served by priority,
            then first come first served, and a waiting candidate with a higher priority
            than the holder's asks it to hand over (``status.preferredHolder``).

    Raises:
        ConfigurationError: ``name``, ``ttl`` or ``priority`` out of range.
    """

    def __init__(
        self,
        name: str,
        *,
        ttl: int = state.DEFAULT_TTL_SECONDS,
        namespace: str | None = None,
        client: Client | None = None,
        priority: int = 0,
    ) -> None:
        self.name = check_object_name(name)
        self.ttl = check_ttl(ttl)
        self.priority = check_priority(priority)
        if namespace is not None:
            check_object_name(namespace, field="namespace")
        self._namespace = namespace
        self._client = client
        self._sections: dict[int, list[_Section]] = {}
        self._counters = LeaseCounters()

    def __repr__(self) -> str:
        ns = self._namespace
        if ns is None:
            ns = self._client._namespace if self._client is not None else None
        ns = ns or "?"
        c = self._counters
        return (
            f"<Lease {ns}/{self.name} ttl={self.ttl} priority={self.priority} "
            f"held={c.held} waiting={c.waiting}>"
        )

    async def _connect(self) -> tuple[Client, str]:
        client = self._client if self._client is not None else default_client()
        await client.connect()
        return client, self._namespace or client.namespace

    async def create(self, *, exist_ok: bool = False) -> None:
        """Create the Lease object with ``spec.ttlSeconds = ttl``.

        Raises:
            AlreadyExistsError: it exists and ``exist_ok`` is false.
        """
        client, ns = await self._connect()
        spec = {"ttlSeconds": self.ttl}
        if exist_ok:
            await ensure_exists(client, LEASE, ns, self.name, spec)
            return
        body = {"metadata": {"name": self.name, "namespace": ns}, "spec": spec}
        await client.store.create(LEASE, ns, body)

    async def delete(self) -> None:
        """Delete the Lease object (only its creator may, or a user allowed ``override``).
        A current holder learns it lost at once; fencing tokens start again from 1 on a new
        object (:attr:`HeldLease.fencing` names the object's uid).

        Raises:
            NotFoundError: there is no such lease.
        """
        client, ns = await self._connect()
        await client.store.delete(LEASE, ns, self.name)

    async def status(self) -> LeaseStatus:
        """The lease as stored now (a fresh read of the object and of its candidates).

        Raises:
            NotFoundError: there is no such lease.
        """
        client, ns = await self._connect()
        obj = await client.store.get(LEASE, ns, self.name)
        claims = await client.store.list(
            CLAIM, ns, field_selector=target_selector(LEASE, self.name)
        )
        return LeaseStatus.from_object(obj, claims.items)

    def statistics(self) -> LeaseStatistics:
        """What this object did in this process (no I/O)."""
        return LeaseStatistics(**attrs.asdict(self._counters))

    async def acquire(self) -> HeldLease:
        """Wait until this process holds the lease; renewal runs in the client's background.

        Without ``async with`` nothing can be cancelled for you when the lease is lost:
        check ``held.lost`` (or pass ``held.fencing`` downstream) and call
        ``await held.release()``.
        """
        held = await self._acquire(blocking=True)
        held._start_background()
        return held

    async def acquire_nowait(self) -> HeldLease:
        """Take the lease if that is possible right now.

        Raises:
            WouldBlock: it is held by someone else (not yet expired on our clock), or
                candidates are waiting ahead of us.
        """
        held = await self._acquire(blocking=False)
        held._start_background()
        return held

    async def __aenter__(self) -> HeldLease:
        held = await self._acquire(blocking=True)
        section = _Section(held)
        try:
            await section.enter()
        except BaseException:
            await held.release()
            raise
        self._sections.setdefault(anyio.get_current_task().id, []).append(section)
        return held

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        task = anyio.get_current_task().id
        section = self._sections[task].pop()
        if not self._sections[task]:
            del self._sections[task]
        held = section.held
        try:
            swallowed = await section.exit(exc_type, exc, tb)
        finally:
            lost = held.lost
            try:
                await held.release()
            except APIError as error:
                # The entry expires by its TTL anyway; the body's outcome matters more.
                log.warning("%r: release failed: %s", held, error)
        if lost:
            raise LeadershipLost(
                f"Lease {held.namespace}/{held.name}: lost while held "
                f"(token {held.token}): {held.lost_reason}"
            ) from (None if swallowed else exc)
        return swallowed

    async def _acquire(self, *, blocking: bool) -> HeldLease:
        client, ns = await self._connect()
        request = LeaseRequest(
            name=self.name,
            namespace=ns,
            ttl=self.ttl,
            priority=self.priority,
            holder=client.identity.holder,
            pod=client.identity.pod,
        )
        with span("lease.acquire", lease=self.name, namespace=ns, holder=request.holder):
            return await acquire_lease(client, request, self._counters, blocking=blocking)


@final
class _Section:
    """One ``async with lease`` block: the renewer's task group around the body's scope.

    The body's exception only ever reaches the body's cancel scope (which swallows the
    cancellation it caused itself on loss), never the task group, so it propagates as is.
    """

    def __init__(self, held: HeldLease) -> None:
        self.held = held
        self.tg = anyio.create_task_group()
        self.body = anyio.CancelScope()

    async def enter(self) -> None:
        await self.tg.__aenter__()
        self.tg.start_soon(self.held._keep, lambda reason: self.body.cancel())
        self.body.__enter__()

    async def exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return bool(self.body.__exit__(exc_type, exc, tb))
        finally:
            self.tg.cancel_scope.cancel()
            await self.tg.__aexit__(None, None, None)

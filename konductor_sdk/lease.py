"""Lease: a singleton section across processes, with fencing tokens and fast handoff.

::

    lease = Lease("scheduler", ttl=15)
    async with lease as held:           # waits, then holds; renewed in the background
        await run(fencing_token=held.token)

Acquisition is one compare-and-swap on the Lease object's status (see
:mod:`konductor_sdk._machines.lease`); waiting is the shared watch. A waiter takes over an
unreleased lease only after the holder's entry has not changed for its ``ttlSeconds`` on
the *waiter's* monotonic clock; the holder gives up ``safety_margin`` earlier, counted from
when it *sent* its last successful renewal, so it always stops first. Layout, guarantees and
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

from konductor_sdk._engines.lease_held import HeldLease
from konductor_sdk._engines.lease_waiter import Waiter
from konductor_sdk._kernel.cas import ensure_exists
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.clock import parse_rfc3339, rfc3339
from konductor_sdk._kernel.entries import MAX_TTL_SECONDS, MIN_TTL_SECONDS
from konductor_sdk._kernel.errors import APIError, ConfigurationError, LeadershipLost
from konductor_sdk._kernel.identity import Identity
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._machines import lease as state

log = logging.getLogger("konductor_sdk.lease")

__all__ = ["CandidateInfo", "HeldLease", "Lease", "LeaseStatistics", "LeaseStatus"]


def check_ttl(ttl: object, *, field: str = "ttl") -> int:
    """``ttl`` as whole seconds in ``[1, 86400]`` (entries record integer seconds)."""
    if isinstance(ttl, float) and ttl.is_integer():
        ttl = int(ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ConfigurationError(f"{field} must be whole seconds (an int), got {ttl!r}")
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise ConfigurationError(
            f"{field} must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} seconds, got {ttl}"
        )
    return ttl


def check_priority(priority: object, *, field: str = "priority") -> int:
    """``priority`` as an int in ``[0, 2**31 - 1]`` (higher is preferred)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"{field} must be an int, got {priority!r}")
    if not 0 <= priority <= state.MAX_PRIORITY:
        raise ConfigurationError(
            f"{field} must be between 0 and {state.MAX_PRIORITY}, got {priority}"
        )
    return priority


@final
@attrs.frozen
class CandidateInfo:
    """A candidate waiting for the lease."""

    holder: str
    priority: int
    key: str


@final
@attrs.frozen
class LeaseStatus:
    """The lease as stored on the server (see ``docs/lease.md``).

    ``token`` is the current holder's fencing token; ``fencing_token`` the last one issued.
    Times are the writers' wall clocks, for humans only.
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
    def from_object(cls, obj: KObject) -> LeaseStatus:
        status = state.normalize(obj.spec, dict(obj.status))
        current = state.holder_entry(status)
        entry: Mapping[str, Any] = current[1] if current else {}
        candidates = tuple(
            CandidateInfo(str(e.get("holder", "")), int(e.get("priority", 0)), k)
            for k, e in sorted(
                status["candidates"].items(), key=lambda kv: (-int(kv[1].get("priority", 0)), kv[0])
            )
        )
        return cls(
            name=obj.name,
            namespace=obj.namespace,
            ttl_seconds=int(obj.spec.get("ttlSeconds", state.DEFAULT_TTL_SECONDS)),
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
            over; renewals happen every ``ttl/3``.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        priority: a waiting candidate with a higher priority than the holder's makes the
            holder hand over at once (``status.preferredHolder``), and is served first
            when the lease is free.

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
        self._identity: Identity | None = None
        self._sections: dict[int, list[_Section]] = {}
        self._held: set[HeldLease] = set()
        self._waiting = 0
        self._counts = {"acquisitions": 0, "releases": 0, "losses": 0, "evaluations": 0}

    def __repr__(self) -> str:
        ns = self._namespace
        if ns is None:
            ns = self._client._namespace if self._client is not None else None
        ns = ns or "?"
        return (
            f"<Lease {ns}/{self.name} ttl={self.ttl} priority={self.priority} "
            f"held={len(self._held)} waiting={self._waiting}>"
        )

    async def _connect(self) -> tuple[Client, str]:
        client = self._client if self._client is not None else default_client()
        await client.connect()
        return client, self._namespace or client.namespace

    def _spec(self) -> dict[str, Any]:
        return {"ttlSeconds": self.ttl}

    async def create(self, *, exist_ok: bool = False) -> None:
        """Create the Lease object with ``spec.ttlSeconds = ttl``.

        Raises:
            AlreadyExistsError: it exists and ``exist_ok`` is false.
        """
        client, ns = await self._connect()
        if exist_ok:
            await ensure_exists(client, LEASE, ns, self.name, self._spec())
            return
        body = {"metadata": {"name": self.name, "namespace": ns}, "spec": self._spec()}
        await client.store.create(LEASE, ns, body)

    async def delete(self) -> None:
        """Delete the Lease object. A current holder learns it lost at once; fencing tokens
        start again from 1 on a new object (downstream systems should key on its uid).

        Raises:
            NotFoundError: there is no such lease.
        """
        client, ns = await self._connect()
        await client.store.delete(LEASE, ns, self.name)

    async def status(self) -> LeaseStatus:
        """The lease as stored now (a fresh read).

        Raises:
            NotFoundError: there is no such lease.
        """
        client, ns = await self._connect()
        return LeaseStatus.from_object(await client.store.get(LEASE, ns, self.name))

    def statistics(self) -> LeaseStatistics:
        """What this object did in this process (no I/O)."""
        return LeaseStatistics(held=len(self._held), waiting=self._waiting, **self._counts)

    async def acquire(self) -> HeldLease:
        """Wait until this process holds the lease; renewal runs in the client's background.

        Without ``async with`` nothing can be cancelled for you when the lease is lost:
        check ``held.lost`` (or pass ``held.token`` downstream) and call
        ``await held.release()``.
        """
        held = await self._acquire(blocking=True)
        held._start_background()
        return held

    async def acquire_nowait(self) -> HeldLease:
        """Take the lease if that is possible right now.

        Raises:
            WouldBlock: it is held by someone else (not yet expired on our clock) or a
                higher-priority candidate is waiting.
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
            try:
                await held.release()
            except APIError as error:
                # The entry expires by its TTL anyway; the body's outcome matters more.
                log.warning("%r: release failed: %s", held, error)
        if held.lost:
            raise LeadershipLost(
                f"Lease {held.namespace}/{held.name}: lost while held "
                f"(token {held.token}): {held.lost_reason}"
            ) from (None if swallowed else exc)
        return swallowed

    def _entry(self, identity: Identity, client: Client) -> dict[str, Any]:
        now = rfc3339(client.clock.now())
        return {
            **identity.entry_fields(),
            "ttlSeconds": self.ttl,
            "renewCount": 0,
            "acquiredAt": now,
            "renewedAt": now,
        }

    async def _acquire(self, *, blocking: bool, poll: float | None = None) -> HeldLease:
        """Wait for (or try) the grant. ``poll`` caps how long a waiter goes without
        re-judging expiry (the elector passes its retry period)."""
        client, ns = await self._connect()
        identity = self._identity or client.identity
        key = identity.new_key()
        waiter = Waiter(self, client, ns, identity, key, poll or max(self.ttl / 3.0, 0.05))
        self._waiting += 1
        error: Exception | None = None
        held: HeldLease | None = None
        try:
            with span("lease.acquire", lease=self.name, namespace=ns, holder=identity.holder):
                async with anyio.create_task_group() as tg:
                    try:
                        held = await waiter.run(tg, blocking=blocking)
                    except BaseException as exc:
                        with anyio.CancelScope(shield=True), anyio.move_on_after(self.ttl):
                            await waiter.cleanup()
                        if not isinstance(exc, Exception):
                            raise
                        error = exc  # re-raised below, not as an ExceptionGroup
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            self._waiting -= 1
        if error is not None:
            raise error
        assert held is not None
        self._counts["acquisitions"] += 1
        self._held.add(held)
        return held

    def _on_released(self, held: HeldLease) -> None:
        if held in self._held:
            self._held.discard(held)
            self._counts["releases"] += 1
            if held.lost:
                self._counts["losses"] += 1


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

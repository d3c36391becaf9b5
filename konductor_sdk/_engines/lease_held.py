"""The holder's side of a Lease: renew, notice loss, hand over, release.

A :class:`HeldLease` is valid until its *deadline*: the monotonic time its last successful
write (the grant or a renewal) was **sent**, plus ``ttlSeconds`` minus the safety margin
(and, for a :class:`~konductor_sdk.election.LeaderElector`, at most ``renew_deadline``),
and no later than its session's deadline (the operator removes the entry of a session it
judged dead). Waiters count the TTL from when they *saw* that write, which is later, so the
holder stops believing before anyone may take over. :attr:`HeldLease.lost` compares the
clock with the deadline itself: it turns true the instant the deadline passes, not when a
background task notices.

Renewals are JSON patches that ``test`` the entry's token: they never conflict with other
writes to the object and fail at once (HTTP 422) if the entry is no longer this grant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import final

import anyio
import attrs

from konductor_sdk._kernel.cas import json_patch_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import APIError, InvalidObjectError, NotFoundError
from konductor_sdk._kernel.objects import LEASE
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.sessions import Session, safety_margin
from konductor_sdk._machines import lease as state
from konductor_sdk.fencing import FencingToken

log = logging.getLogger("konductor_sdk.lease")


@attrs.define
class LeaseCounters:
    """What the acquisitions of one :class:`~konductor_sdk.lease.Lease` object did."""

    held: int = 0
    waiting: int = 0
    acquisitions: int = 0
    releases: int = 0
    losses: int = 0
    evaluations: int = 0


@final
class HeldLease:
    """One acquisition of a :class:`~konductor_sdk.lease.Lease`.

    Attributes:
        token: the fencing token of this acquisition; strictly larger than every token
            issued before on this Lease object (``uid``). Pass it (or :attr:`fencing`) to
            downstream systems and have them reject writes carrying a smaller one.
        key: the entry's key in ``status.holders``.
        holder: the identity recorded as holder.
        uid: the Lease object's uid (tokens start again on a re-created object).
        session: the name of the Session the grant lives with.
    """

    def __init__(
        self,
        *,
        client: Client,
        namespace: str,
        name: str,
        key: str,
        holder: str,
        token: int,
        ttl_seconds: int,
        sent_at: float,
        uid: str,
        session: Session,
        counters: LeaseCounters,
        interval: float | None = None,
        renew_deadline: float | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.key = key
        self.holder = holder
        self.token = token
        self.ttl_seconds = ttl_seconds
        self.uid = uid
        self.session = session.name
        self.renewals = 0
        self._session = session
        self._client = client
        self._counters = counters
        self._last_ok_sent = sent_at
        self._interval = interval if interval is not None else max(ttl_seconds / 3.0, 0.05)
        self._renew_deadline = renew_deadline
        self._lost_reason: str | None = None
        self._released = False
        self._bg_scope: anyio.CancelScope | None = None
        self._release_on_yield = False
        self._handed_out = False
        session.holds += 1

    def __repr__(self) -> str:
        state_ = "released" if self._released else ("lost" if self.lost else "held")
        return (
            f"<HeldLease {self.namespace}/{self.name} token={self.token} "
            f"holder={self.holder!r} {state_}>"
        )

    @property
    def fencing(self) -> FencingToken:
        """This grant's token for :class:`konductor_sdk.Fence` (slot 0: one holder)."""
        return FencingToken(f"Lease/{self.namespace}/{self.name}@{self.uid}", (0,), self.token)

    @property
    def deadline(self) -> float:
        """Monotonic time (the client's clock) after which this holder stops believing it
        holds the lease, unless a renewal succeeds first."""
        budget = self.ttl_seconds - safety_margin(self.ttl_seconds)
        if self._renew_deadline is not None:
            budget = min(budget, self._renew_deadline)
        return min(self._last_ok_sent + budget, self._session.deadline)

    @property
    def lost(self) -> bool:
        """True once the lease ended while held: its deadline passed (read from the clock
        now), it was taken, reaped or deleted, its session ended, or it yielded."""
        if self._lost_reason is None and not self._released:
            if self._client.clock.monotonic() >= self.deadline:
                self._lose(f"not renewed before its deadline (ttl {self.ttl_seconds}s)")
            elif self._session.lost:
                self._lose(f"its session ended: {self._session.lost_reason}")
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        self.lost  # noqa: B018 - reads the clock
        return self._lost_reason

    async def release(self) -> None:
        """Give the lease up so a waiting candidate takes over at once; idempotent.

        The write is shielded from cancellation (bounded by the TTL, after which the entry
        expires anyway).

        Raises:
            APIError: the server could not be told (the entry then expires by its TTL).
        """
        if self._released:
            return
        self.lost  # noqa: B018 - a grant that ran out before its release is a loss
        self._released = True
        if self._bg_scope is not None:
            self._bg_scope.cancel()
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.ttl_seconds):
                written = await json_patch_status(
                    self._client.store,
                    LEASE,
                    self.namespace,
                    self.name,
                    state.release_patch(key=self.key, token=self.token),
                )
                watch = self._client.cached_watch(LEASE, self.namespace)
                if watch is not None:
                    watch.observe(written)  # our next acquisition need not wait for the event
        except (NotFoundError, InvalidObjectError):
            pass  # gone already: deleted, reaped, or taken over after our deadline
        finally:
            self._session.holds -= 1
            if self._handed_out:
                counters = self._counters
                counters.held -= 1
                counters.releases += 1
                if self._lost_reason is not None:
                    counters.losses += 1

    def _hand_out(self) -> None:
        """Count this grant as acquired (a grant given back at once never was)."""
        self._handed_out = True
        self._counters.held += 1
        self._counters.acquisitions += 1

    def _lose(self, reason: str) -> bool:
        if self._lost_reason is not None:
            return False
        self._lost_reason = reason
        log.info("%r: %s", self, reason)
        return True

    def _start_background(self) -> None:
        """Renew in the client's task group (for ``acquire()`` without ``async with``)."""
        self._release_on_yield = True
        self._bg_scope = anyio.CancelScope()
        self._client.spawn(self._background)

    async def _background(self) -> None:
        assert self._bg_scope is not None
        with self._bg_scope:
            await self._keep(lambda reason: None)
        if self.lost and not self._released:
            await self.release()

    async def _keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew and watch until cancelled; ``on_lost(reason)`` is called once, at the
        deadline at the latest. After a *yield* request it keeps renewing (the owner
        releases once its body has stopped) unless this lease renews in the background."""
        async with anyio.create_task_group() as tg:

            def lose(reason: str, *, final: bool) -> None:
                if self._released:
                    # Our own release removed the entry: an end, not a loss.
                    tg.cancel_scope.cancel()
                    return
                if self._lose(reason) or (self._lost_reason is not None and final):
                    on_lost(self._lost_reason or reason)
                if final:
                    tg.cancel_scope.cancel()

            if self.lost:
                on_lost(self._lost_reason or "lost")
                return
            tg.start_soon(self._renew_loop, lose)
            tg.start_soon(self._watch_loop, lose)
            tg.start_soon(self._session_loop, lose)

    async def _renew_loop(self, lose: Callable[..., None]) -> None:
        clock = self._client.clock
        failures = 0
        while True:
            wait = self._interval if failures == 0 else backoff(failures, 0.1, self._interval)
            await anyio.sleep(max(0.0, min(wait, self.deadline - clock.monotonic())))
            remaining = self.deadline - clock.monotonic()
            if remaining <= 0 or self.lost:
                lose(self._lost_reason or "deadline passed", final=True)
                return
            try:
                with anyio.fail_after(remaining):
                    await self._renew_once()
                failures = 0
            except (NotFoundError, InvalidObjectError) as exc:
                # A failed "test" (the entry is not this grant any more) or a deleted
                # object. A 409 is not among them: the server's own retries of a contended
                # patch ran out, which is transient.
                lose(f"the entry is no longer ours ({exc})", final=True)
                return
            except (APIError, TimeoutError) as exc:
                failures += 1
                log.debug("%r: renewal failed: %s", self, exc)

    async def _renew_once(self) -> None:
        clock = self._client.clock
        ops = state.renew_patch(
            key=self.key,
            token=self.token,
            renew_count=self.renewals + 1,
            now=rfc3339(clock.now()),
        )
        sent = clock.monotonic()
        obj = await json_patch_status(self._client.store, LEASE, self.namespace, self.name, ops)
        self.renewals += 1
        if not self.lost:
            # Sent before the deadline: observers see the new count after this instant.
            self._last_ok_sent = sent
        watch = self._client.cached_watch(LEASE, self.namespace)
        if watch is not None:
            watch.observe(obj)

    async def _session_loop(self, lose: Callable[..., None]) -> None:
        await self._session.wait_lost()
        lose(f"its session ended: {self._session.lost_reason}", final=True)

    async def _watch_loop(self, lose: Callable[..., None]) -> None:
        try:
            await self._watch_entry(lose)
        except APIError as exc:
            # The shared watch failed (forbidden, or the server unreachable past the
            # client's retry budget): a takeover could no longer be seen, so stop trusting.
            lose(f"cannot watch the Lease any more: {exc}", final=True)

    async def _watch_entry(self, lose: Callable[..., None]) -> None:
        # The cache holds at least our grant (the CAS result was fed in) and only moves
        # forward, so an entry missing from it is gone from the server too.
        watch = await self._client.watch(LEASE, self.namespace)
        while True:
            changed = watch.next_change(self.name, self.namespace)
            obj = watch.get(self.name, self.namespace)
            if obj is None or obj.uid != self.uid:
                lose("the Lease object was deleted", final=True)
                return
            entry = (obj.status.get("holders") or {}).get(self.key)
            if entry is None or entry.get("token") != self.token:
                lose("the entry was removed (reaped or taken over)", final=True)
                return
            preferred = state.yield_to(obj.status, key=self.key, identity=self.holder)
            if preferred is not None:
                lose(
                    f"yielding to higher-priority candidate {preferred}",
                    final=self._release_on_yield,
                )
                return
            await changed.wait()

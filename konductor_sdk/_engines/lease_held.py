"""The holder's side of a Lease: renew, notice loss, hand over, release.

A :class:`HeldLease` is valid until its *deadline*: the monotonic time its last successful
write (the grant or a renewal) was **sent**, plus ``ttlSeconds`` minus the safety margin
(and, for a :class:`~konductor_sdk.election.LeaderElector`, at most ``renew_deadline``).
Waiters count the TTL from when they *saw* that write, which is later, so the holder is
told before anyone may take over. Renewals are JSON patches that ``test`` the entry's holder
and token: they never conflict with candidates' writes on the same object, and fail at once
(HTTP 422) if the entry is no longer this grant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, final

import anyio

from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.entries import safety_margin
from konductor_sdk._kernel.errors import APIError, ConflictError, InvalidObjectError, NotFoundError
from konductor_sdk._kernel.objects import LEASE, KObject, json_pointer
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._machines import lease as state

if TYPE_CHECKING:
    from konductor_sdk.lease import Lease

log = logging.getLogger("konductor_sdk.lease")


class _EntryGone(Exception):
    pass


@final
class HeldLease:
    """One acquisition of a :class:`~konductor_sdk.lease.Lease`.

    Attributes:
        token: the fencing token of this acquisition; strictly larger than every token
            issued before on this Lease object (``uid``). Pass it to downstream systems and
            have them reject writes carrying a smaller one.
        key: the entry's key in ``status.holders``.
        holder: the identity recorded as holder.
        uid: the Lease object's uid (tokens start again on a re-created object).
    """

    def __init__(
        self,
        *,
        lease: Lease,
        client: Client,
        namespace: str,
        key: str,
        holder: str,
        token: int,
        ttl_seconds: int,
        sent_at: float,
        uid: str,
    ) -> None:
        self.name = lease.name
        self.namespace = namespace
        self.key = key
        self.holder = holder
        self.token = token
        self.ttl_seconds = ttl_seconds
        self.uid = uid
        self.renewals = 0
        self._lease = lease
        self._client = client
        self._last_ok_sent = sent_at
        self._interval = max(ttl_seconds / 3.0, 0.05)
        self._renew_deadline: float | None = None
        self._lost_reason: str | None = None
        self._released = False
        self._bg_scope: anyio.CancelScope | None = None
        self._release_on_yield = False

    def __repr__(self) -> str:
        state_ = "released" if self._released else ("lost" if self.lost else "held")
        return (
            f"<HeldLease {self.namespace}/{self.name} token={self.token} "
            f"holder={self.holder!r} {state_}>"
        )

    @property
    def lost(self) -> bool:
        """True once the lease ended while held (expired, taken, deleted, or yielded)."""
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    @property
    def deadline(self) -> float:
        """Monotonic time (the client's clock) after which this holder stops believing it
        holds the lease, unless a renewal succeeds first."""
        budget = self.ttl_seconds - safety_margin(self.ttl_seconds)
        if self._renew_deadline is not None:
            budget = min(budget, self._renew_deadline)
        return self._last_ok_sent + budget

    def _configure(self, *, interval: float, renew_deadline: float) -> None:
        self._interval = interval
        self._renew_deadline = renew_deadline

    async def release(self) -> None:
        """Give the lease up so a waiting candidate takes over at once; idempotent.

        The write is shielded from cancellation (bounded by the TTL, after which the entry
        expires anyway).

        Raises:
            APIError: the server could not be told (the entry then expires by its TTL).
        """
        if self._released:
            return
        self._released = True
        if self._bg_scope is not None:
            self._bg_scope.cancel()
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.ttl_seconds):
                await update_status(
                    self._client,
                    LEASE,
                    self.namespace,
                    self.name,
                    lambda o: state.release(o.spec, o.status, key=self.key, token=self.token),
                )
        except NotFoundError:
            pass
        finally:
            self._lease._on_released(self)

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
                if self._lose(reason):
                    on_lost(reason)
                if final:
                    tg.cancel_scope.cancel()

            tg.start_soon(self._renew_loop, lose)
            tg.start_soon(self._watch_loop, lose)

    async def _renew_loop(self, lose: Callable[..., None]) -> None:
        clock = self._client.clock
        failures = 0
        while True:
            wait = self._interval if failures == 0 else backoff(failures, 0.1, self._interval)
            await anyio.sleep(max(0.0, min(wait, self.deadline - clock.monotonic())))
            remaining = self.deadline - clock.monotonic()
            if remaining <= 0:
                lose(
                    f"no successful renewal before the deadline (ttl {self.ttl_seconds}s)",
                    final=True,
                )
                return
            try:
                with anyio.fail_after(remaining):
                    await self._renew_once()
                failures = 0
            except _EntryGone as exc:
                lose(f"the entry is no longer ours ({exc})", final=True)
                return
            except (APIError, TimeoutError) as exc:
                failures += 1
                log.debug("%r: renewal failed: %s", self, exc)

    async def _renew_once(self) -> KObject:
        clock = self._client.clock
        ptr = json_pointer("status", "holders", self.key)
        now = rfc3339(clock.now())
        ops = [
            {"op": "test", "path": f"{ptr}/holder", "value": self.holder},
            {"op": "test", "path": f"{ptr}/token", "value": self.token},
            {"op": "replace", "path": f"{ptr}/renewCount", "value": self.renewals + 1},
            {"op": "replace", "path": f"{ptr}/renewedAt", "value": now},
            {"op": "add", "path": "/status/renewTime", "value": now},
        ]
        sent = clock.monotonic()
        try:
            obj = await self._client.store.patch(
                LEASE, self.namespace, self.name, ops, patch_type="json", subresource="status"
            )
        except (NotFoundError, InvalidObjectError, ConflictError) as exc:
            raise _EntryGone(str(exc)) from exc
        self.renewals += 1
        self._last_ok_sent = sent
        watch = self._client.cached_watch(LEASE, self.namespace)
        if watch is not None:
            watch.observe(obj)
        return obj

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
            if entry is None or int(entry.get("token", -1)) != self.token:
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

"""The waiting side of a Lease: evaluate, register as a candidate, wait, grant, clean up.

A waiter never trusts a timestamp written by someone else. It feeds every entry's renewal
marker ``(holder, token, renewCount)`` to an :class:`~konductor_sdk._entries.ExpiryTracker`
and calls an entry expired only when that marker has not changed for the entry's
``ttlSeconds`` on *its own* monotonic clock. It re-observes the object inside every
compare-and-swap attempt, so a grant is never computed from a stale observation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, final

import anyio
from anyio.abc import TaskGroup

from konductor_sdk._engines.lease_held import HeldLease
from konductor_sdk._kernel.cas import ensure_exists, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.entries import ExpiryTracker, Renewal
from konductor_sdk._kernel.errors import (
    APIError,
    ConflictError,
    InvalidObjectError,
    NotFoundError,
    WouldBlock,
)
from konductor_sdk._kernel.identity import Identity
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._machines import lease as state

if TYPE_CHECKING:
    from konductor_sdk.lease import Lease

log = logging.getLogger("konductor_sdk.lease")


def observe_entries(tracker: ExpiryTracker, status: Mapping[str, Any]) -> frozenset[str]:
    """Feed every entry's renewal marker to ``tracker``; return the keys it judges expired.

    Re-observing inside each compare-and-swap attempt matters: if the entry was renewed
    since we last looked, its marker changed and its clock restarts, so a fresh read can
    never be judged with a stale observation.
    """
    expired: set[str] = set()
    present: list[str] = []
    for map_name in ("holders", "candidates"):
        for key, entry in (status.get(map_name) or {}).items():
            marker = (entry.get("holder"), entry.get("token"), int(entry.get("renewCount", 0)))
            ttl = float(entry.get("ttlSeconds", state.DEFAULT_TTL_SECONDS))
            tracker.observe(key, marker, ttl)
            present.append(key)
            if tracker.expired(key):
                expired.add(key)
    tracker.retain(present)
    return frozenset(expired)


def _next_expiry(tracker: ExpiryTracker, status: Mapping[str, Any]) -> float | None:
    times = [
        at
        for map_name in ("holders", "candidates")
        for key in (status.get(map_name) or {})
        if (at := tracker.expires_at(key)) is not None
    ]
    return min(times, default=None)


@final
class Waiter:
    """One acquisition attempt: evaluate, maybe register as a candidate, wait, grant."""

    def __init__(
        self, lease: Lease, client: Client, ns: str, identity: Identity, key: str, poll: float
    ) -> None:
        self.lease = lease
        self.client = client
        self.ns = ns
        self.identity = identity
        self.key = key
        self.poll = poll
        self.tracker = ExpiryTracker(client.clock)
        # Every candidate key this attempt may have written (for cleanup), and the one
        # currently registered.
        self.candidate_keys: list[str] = []
        self.candidate_key: str | None = None
        self.renewal_scope: anyio.CancelScope | None = None
        self.wrote = False  # whether any write of ours may have reached the server
        self.last_holder: str | None = None

    async def run(self, tg: TaskGroup, *, blocking: bool) -> HeldLease:
        lease, name, ns = self.lease, self.lease.name, self.ns
        watch = await self.client.watch(LEASE, ns)
        while True:
            changed = watch.next_change(name, ns)
            obj = watch.get(name, ns)
            if obj is None:
                # Deleted under a holder we saw: it may not have noticed yet, so wait out
                # its entry on our clock before a new object lets anyone in.
                last = self.last_holder
                if last is not None and not self.tracker.expired(last):
                    await self._wait(changed, self.tracker.expires_at(last))
                    continue
                obj = await ensure_exists(self.client, LEASE, ns, name, lease._spec())
            lease._counts["evaluations"] += 1
            expired = observe_entries(self.tracker, obj.status)
            current = state.holder_entry(obj.status)
            self.last_holder = current[0] if current else None
            reason = state.blocked_by(
                obj.status,
                priority=lease.priority,
                expired=expired,
                candidate_key=self.candidate_key,
            )
            if reason is None:
                try:
                    return await self._grant(obj)
                except WouldBlock as exc:
                    reason = str(exc)
                    if not blocking:
                        raise WouldBlock(f"Lease {ns}/{name} is {reason}") from None
                    await self._wait(changed, None)
                    continue
            if not blocking:
                raise WouldBlock(f"Lease {ns}/{name} is {reason}")
            candidates = obj.status.get("candidates") or {}
            if self.candidate_key not in candidates and len(candidates) < state.MAX_CANDIDATES:
                await self._register(obj, tg)
                continue
            await self._wait(changed, _next_expiry(self.tracker, obj.status))

    async def _wait(self, changed: anyio.Event, expiry: float | None) -> None:
        timeout = self.poll
        if expiry is not None:
            timeout = min(timeout, max(0.0, expiry - self.client.clock.monotonic()) + 0.01)
        with anyio.move_on_after(timeout):
            await changed.wait()

    def _expired_now(self, obj: KObject) -> frozenset[str]:
        return observe_entries(self.tracker, obj.status)

    async def _grant(self, obj: KObject) -> HeldLease:
        lease, client = self.lease, self.client
        entry = lease._entry(self.identity, client)
        sent = [0.0]

        def mutate(o: KObject) -> dict[str, Any]:
            new = state.acquire(
                o.spec,
                o.status,
                key=self.key,
                entry=entry,
                priority=lease.priority,
                expired=self._expired_now(o),
                candidate_key=self.candidate_key,
            )
            # Taken right before each PUT: the last call precedes the write that won, so
            # the holder's deadline is never counted from later than its grant was sent.
            sent[0] = client.clock.monotonic()
            self.wrote = True
            return new

        result = await update_status(client, LEASE, self.ns, lease.name, mutate, current=obj)
        granted = result.object.status["holders"][self.key]
        return HeldLease(
            lease=lease,
            client=client,
            namespace=self.ns,
            key=self.key,
            holder=self.identity.holder,
            token=int(granted["token"]),
            ttl_seconds=int(granted["ttlSeconds"]),
            sent_at=sent[0],
            uid=result.object.uid,
        )

    async def _register(self, obj: KObject, tg: TaskGroup) -> None:
        lease, client = self.lease, self.client
        ckey = self.identity.new_key()
        # Before the write: if we are cancelled while it is in flight, it may still land.
        self.candidate_keys.append(ckey)
        entry = lease._entry(self.identity, client)
        sent = [0.0]

        def mutate(o: KObject) -> dict[str, Any] | None:
            new = state.register_candidate(
                o.spec,
                o.status,
                key=ckey,
                entry=entry,
                priority=lease.priority,
                expired=self._expired_now(o),
            )
            sent[0] = client.clock.monotonic()
            self.wrote = self.wrote or new is not None
            return new

        result = await update_status(client, LEASE, self.ns, lease.name, mutate, current=obj)
        if not result.wrote:
            return  # full: wait unregistered (our priority is then not advertised)
        if self.renewal_scope is not None:
            self.renewal_scope.cancel()
        self.candidate_key = ckey
        renewal = Renewal(
            client=client,
            kind=LEASE,
            namespace=self.ns,
            name=lease.name,
            path=("status", "candidates", ckey),
            expect={"holder": self.identity.holder},
            ttl_seconds=float(lease.ttl),
            last_ok_sent=sent[0],
        )
        self.renewal_scope = scope = anyio.CancelScope()
        tg.start_soon(_run_in_scope, scope, renewal.run, _ignore)

    async def cleanup(self) -> None:
        """Remove whatever this attempt may have written (its grant included: a cancelled
        caller may have been granted the lease by a write whose answer it never saw)."""
        if not self.wrote:
            return
        keys = frozenset([self.key, *self.candidate_keys])
        try:
            # A fresh read: the watch cache may not show a write whose answer we never saw.
            current = await self.client.store.get(LEASE, self.ns, self.lease.name)
            await update_status(
                self.client,
                LEASE,
                self.ns,
                self.lease.name,
                lambda o: state.forget(o.spec, o.status, keys=keys),
                current=current,
            )
        except (NotFoundError, ConflictError, InvalidObjectError, APIError) as error:
            log.warning("Lease %s/%s: cleanup failed: %s", self.ns, self.lease.name, error)


def _ignore(reason: str) -> None:
    # A candidate entry that could not be renewed is re-registered when the waiter sees it
    # gone; nothing else to do.
    del reason


async def _run_in_scope(
    scope: anyio.CancelScope, func: Callable[[Callable[[str], None]], Any], arg: Any
) -> None:
    with scope:
        await func(arg)

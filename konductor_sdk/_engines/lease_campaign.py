"""The waiting side of a Lease: judge, queue as a Claim, wait for the turn, grant.

One :func:`acquire_lease` call is one *campaign*:

1. judge the lease on this process's :class:`~konductor_sdk._engines.lease_view.LeaseView`
   (:func:`konductor_sdk._machines.lease.judge`): free, or its holder expired on our clock
   and granted to our own user, and nobody live ahead of us: **grant** (an uncontended
   acquisition writes nothing else);
2. otherwise create a ``Claim`` (one write; it lives with our Session) and wait: the view
   wakes us when the lease or the line changes and we are first among this process's
   candidates, or when our time comes;
3. the grant is one JSON patch that ``test``\\s the fencing token it read (and, taking over,
   the old holder's renewCount): if another write won, it fails and we judge again on the
   version the watch delivers. Losing a race is never an error for a waiter;
4. after the grant came back, the grant is checked against its own deadline and its
   session's (nothing whose deadline passed is handed out: it is given back and the
   campaign goes on with a fresh session and claim); then the claim is deleted.

A cancelled campaign deletes its claim, withdraws a handoff request it made, and gives
back a grant whose answer it never saw (JSON patch ``test`` of its key and token, so it
removes nothing else): shielded, bounded.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any, Final, final

import anyio
import attrs

from konductor_sdk._engines.lease_held import HeldLease, LeaseCounters
from konductor_sdk._engines.lease_view import LeaseView, Ticket, lease_view
from konductor_sdk._kernel.cas import ensure_exists, json_patch_status
from konductor_sdk._kernel.claims import claim_queue, create_claim, delete_claim_soon
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import (
    APIError,
    ConflictError,
    InvalidObjectError,
    NotFoundError,
    WouldBlock,
)
from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import CLAIM, LEASE, KObject
from konductor_sdk._kernel.sessions import Session, sessions_of
from konductor_sdk._machines import lease as state

log = logging.getLogger("konductor_sdk.lease")

CLEANUP_SECONDS: Final = 10.0
"""Longest a cancelled campaign spends cleaning up (what it leaves expires anyway)."""


@attrs.frozen
class LeaseRequest:
    """What one campaign asks for.

    Attributes:
        name / namespace: the Lease object.
        ttl: lease duration (``spec.ttlSeconds`` of a new object, the entry's TTL, and the
            TTL of the session the claim and the grant live with).
        priority: higher is served first; a head candidate that outranks the holder asks
            it to hand over.
        holder: the identity recorded in the entry and the claim.
        pod: the pod the holder runs in, if any.
        poll: longest a waiter goes without judging again (default ``ttl/3``).
        renew_every / renew_deadline: the holder's renewal period and give-up time
            (an elector's ``retry_period`` / ``renew_deadline``); default ``ttl/3`` / none.
    """

    name: str
    namespace: str
    ttl: int
    priority: int
    holder: str
    pod: PodRef | None = None
    poll: float | None = None
    renew_every: float | None = None
    renew_deadline: float | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return {"ttlSeconds": self.ttl}

    @property
    def poll_seconds(self) -> float:
        return self.poll if self.poll is not None else max(self.ttl / 3.0, 0.05)


async def acquire_lease(
    client: Client, request: LeaseRequest, counters: LeaseCounters, *, blocking: bool
) -> HeldLease:
    """Campaign for the lease until granted (``blocking``) or judge once.

    Raises:
        WouldBlock: not ``blocking``, and the lease cannot be taken right now.
    """
    await client.connect()
    user = await client.whoami()
    counters.waiting += 1
    try:
        async with claim_queue(client, LEASE, request.name, request.namespace) as queue:
            watch = await client.watch(LEASE, request.namespace)
            with lease_view(client, request.namespace, request.name, watch, queue) as view:
                campaign = _Campaign(client, request, counters, view, user)
                try:
                    held = await campaign.run(blocking=blocking)
                except BaseException:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
                        await campaign.cleanup()
                    raise
    finally:
        counters.waiting -= 1
    held._hand_out()
    return held


@final
class _Campaign:
    def __init__(
        self,
        client: Client,
        request: LeaseRequest,
        counters: LeaseCounters,
        view: LeaseView,
        user: str,
    ) -> None:
        self.client = client
        self.request = request
        self.counters = counters
        self.view = view
        self.user = user
        self.ticket: Ticket | None = None
        self.claim: KObject | None = None
        self.claim_name: str | None = None  # known before the create is answered
        self.in_flight: tuple[str, int] | None = None  # a grant write not yet answered
        self.granted: HeldLease | None = None
        self.preferred = False

    async def run(self, *, blocking: bool) -> HeldLease:
        view = self.view
        self.ticket = view.join()
        try:
            return await self._campaign(self.ticket, blocking=blocking)
        finally:
            view.leave(self.ticket)

    async def _campaign(self, ticket: Ticket, *, blocking: bool) -> HeldLease:
        request = self.request
        sessions = sessions_of(self.client)
        session: Session | None = None
        poll = request.poll_seconds
        with contextlib.ExitStack() as stack:
            while True:
                if session is None or session.lost:
                    if self.claim_name is not None:
                        await self._drop_claim()  # it lived with the old session
                    session = await sessions.get(request.ttl, request.namespace)
                    # A waiter learns at once that its session ended (its claim goes too).
                    stack.callback(session.on_lost(lambda _: ticket.wake()))
                held = await self._step(ticket, session, poll, blocking=blocking)
                if held is not None:
                    return held

    async def _step(
        self, ticket: Ticket, session: Session, poll: float, *, blocking: bool
    ) -> HeldLease | None:
        """Judge once and act on it (or wait for a reason to judge again); the held lease
        once granted."""
        client, request, view = self.client, self.request, self.view
        clock = client.clock
        obj = view.object()
        now = clock.monotonic()
        if obj is None:
            after = view.recreate_after
            if after is not None and now < after:
                if not blocking:
                    raise WouldBlock(
                        f"Lease {request.namespace}/{request.name} was deleted under a "
                        "holder that may not have noticed yet"
                    )
                await ticket.wait_for(min(after - now + 0.01, poll))
                return None
            view.feed(
                await ensure_exists(client, LEASE, request.namespace, request.name, request.spec)
            )
            return None
        if self.claim is not None and view.vanished(ticket):
            log.info("Lease %s/%s: our claim vanished; queueing again", *self._where())
            self.claim = self.claim_name = None
            view.set_claim(ticket, None)
        if self.claim is not None and not view.seen(ticket):
            await ticket.wait_for(min(poll, max(0.0, session.deadline - now)))
            return None
        self.counters.evaluations += 1
        verdict = state.judge(
            obj.spec,
            obj.status,
            view.observation(ticket if self.claim else None, request.priority, self.user),
            identity=request.holder,
            priority=request.priority,
        )
        if verdict.action == "grant":
            held = await self._grant(obj, session)
            if held is not None:
                return held
            await self._wait_newer(obj, poll)
            return None
        if not blocking:
            raise WouldBlock(f"Lease {request.namespace}/{request.name} is {verdict.reason}")
        if self.claim is None:
            await self._queue(ticket, session)
            return None
        if verdict.action == "prefer":
            await self._prefer(obj)
            await self._wait_newer(obj, poll)
            return None
        timeout = min(poll, session.deadline - now)
        if verdict.at is not None:
            timeout = min(timeout, verdict.at - now + 0.01)
        await ticket.wait_for(timeout)
        return None

    def _where(self) -> tuple[str, str]:
        return self.request.namespace, self.request.name

    async def _wait_newer(self, obj: KObject, poll: float) -> None:
        """Until the watch delivers a version newer than ``obj`` (at most ``poll``)."""
        watch = self.view.watch
        with anyio.move_on_after(poll):
            while not self.view.newer_than(obj):
                await watch.next_change(self.request.name, self.request.namespace).wait()

    def _entry(self, session: Session) -> dict[str, Any]:
        request = self.request
        now = rfc3339(self.client.clock.now())
        entry: dict[str, Any] = {
            "holder": request.holder,
            "creator": self.user,
            "session": session.name,
            "ttlSeconds": request.ttl,
            "renewCount": 0,
            "acquiredAt": now,
            "renewedAt": now,
            "priority": request.priority,
        }
        if self.claim is not None:
            entry["claim"] = self.claim.name
        if request.pod is not None:
            entry["pod"] = request.pod.to_dict()
        return entry

    async def _grant(self, obj: KObject, session: Session) -> HeldLease | None:
        """Write the grant; the held lease, or ``None`` if another write won (or the grant
        came back too late to be handed out)."""
        client, request = self.client, self.request
        key = f"{request.holder}#{secrets.token_hex(4)}"
        ops, token = state.grant_patch(obj.status, key=key, entry=self._entry(session))
        self.in_flight = (key, token)
        sent = client.clock.monotonic()
        try:
            written = await json_patch_status(
                client.store, LEASE, request.namespace, request.name, ops
            )
        except (InvalidObjectError, ConflictError, NotFoundError) as exc:
            # A failed "test" (someone wrote first), a conflict the server could not retry
            # away, the object gone, or a policy refusal: in every case nothing was written.
            log.debug("Lease %s/%s: grant not written: %s", *self._where(), exc)
            self.in_flight = None
            return None
        except APIError:
            # No answer: it may have been applied. A fresh read tells.
            written = await client.store.get(LEASE, request.namespace, request.name)
            mine = (written.status.get("holders") or {}).get(key)
            if mine is None or mine.get("token") != token:
                self.in_flight = None
                self.view.feed(written)
                return None
        self.view.feed(written)
        held = HeldLease(
            client=client,
            namespace=request.namespace,
            name=request.name,
            key=key,
            holder=request.holder,
            token=token,
            ttl_seconds=request.ttl,
            sent_at=sent,
            uid=written.uid,
            session=session,
            counters=self.counters,
            interval=request.renew_every,
            renew_deadline=request.renew_deadline,
        )
        self.granted, self.in_flight = held, None
        if held.lost:
            # Its deadline (or its session's) passed before the grant came back: it must
            # not be handed out. Give it back; the place in line is forfeit too.
            log.info("Lease %s/%s: grant %d came back too late: %s", *self._where(), token,
                     held.lost_reason)  # fmt: skip
            with anyio.CancelScope(shield=True):
                await self._give_back(held)
                await self._drop_claim()
            return None
        self._drop_claim_later()
        self.granted = None
        return held

    async def _give_back(self, held: HeldLease) -> None:
        try:
            with anyio.move_on_after(CLEANUP_SECONDS):
                await held.release()
        except APIError as exc:
            log.warning("%r: could not give the grant back: %s", held, exc)
        self.granted = None

    async def _queue(self, ticket: Ticket, session: Session) -> None:
        request = self.request
        # Named before the create: if we are cancelled while it is in flight, cleanup
        # still knows what to delete.
        self.claim_name = f"{request.name[:200]}-{secrets.token_hex(5)}"
        fields: Mapping[str, Any] = {
            "priority": request.priority,
            "holder": request.holder,
            "ttlSeconds": request.ttl,
        }
        self.claim = await create_claim(
            self.client, session, LEASE, request.name, fields, claim_name=self.claim_name
        )
        self.view.set_claim(ticket, self.claim)

    def _drop_claim_later(self) -> None:
        """Delete our served claim in the client's background: the grant names it, so every
        observer passes over it already, and the holder need not wait for the delete."""
        name = self.claim_name
        self.claim = self.claim_name = None
        if self.ticket is not None:
            self.view.set_claim(self.ticket, None)
        if name is not None:
            delete_claim_soon(self.client, self.request.namespace, name)

    async def _drop_claim(self) -> None:
        name = self.claim_name
        self.claim = self.claim_name = None
        if self.ticket is not None:
            self.view.set_claim(self.ticket, None)
        if name is None:
            return
        try:
            with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                await self.client.store.delete(CLAIM, self.request.namespace, name)
        except NotFoundError:
            pass
        except APIError as exc:
            # It lives with our session; the operator deletes it when that ends. Until
            # then observers pass over it (the grant that follows names it).
            log.warning("Lease %s/%s: could not delete claim %s: %s", *self._where(), name, exc)

    async def _prefer(self, obj: KObject) -> None:
        current = state.holder_entry(obj.status)
        if current is None:
            return
        key, entry = current
        ops = state.prefer_patch(key=key, token=int(entry["token"]), identity=self.request.holder)
        self.preferred = True
        try:
            written = await json_patch_status(self.client.store, LEASE, *self._where(), ops)
        except APIError as exc:
            log.debug("Lease %s/%s: handoff request not written: %s", *self._where(), exc)
            return
        self.view.feed(written)

    async def cleanup(self) -> None:
        """Undo what this campaign may have written (see the module docstring)."""
        request, store = self.request, self.client.store
        if self.in_flight is not None:
            key, token = self.in_flight
            try:
                await json_patch_status(
                    store, LEASE, *self._where(), state.release_patch(key=key, token=token)
                )
            except (NotFoundError, InvalidObjectError):
                pass  # it never landed (or is gone already)
            except APIError as exc:
                log.warning("Lease %s/%s: could not undo grant %d: %s", *self._where(), token, exc)
        if self.granted is not None:
            await self._give_back(self.granted)
        await self._drop_claim()
        if self.preferred:
            # Somebody else's request by now, or the object is gone: nothing to withdraw.
            with contextlib.suppress(APIError):
                await json_patch_status(
                    store, LEASE, *self._where(), state.unprefer_patch(identity=request.holder)
                )

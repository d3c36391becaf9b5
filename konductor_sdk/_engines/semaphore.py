"""The client side of the semaphore family: acquiring, holding, releasing, admin.

:class:`~konductor_sdk.Semaphore`, :class:`~konductor_sdk.Mutex` and
:class:`~konductor_sdk.RWMutex` are thin fronts over one :class:`SemaphoreObject` each; all
fronts of one client on one object share its
:class:`~konductor_sdk._engines.semaphore_grants.GrantCoordinator`.

**Acquiring.** Uncontended (nobody queued, the request fits), one JSON patch grants it: no
claim. Otherwise the waiter creates its ``Claim`` (its place in the queue) and sleeps on
its own event until the coordinator wrote its grant. After any grant, the waiter checks its
session: a grant that came back after the session's deadline is given back, and the waiter
queues again under a fresh session (docs/design.md, "Sessions"). The claim is deleted once
granted; its place is no longer needed.

**Holding.** Nothing renews a permit: it lives as long as its session, which the client
renews once per ``ttl/3`` for everything it holds.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, final

import anyio

from konductor_sdk._engines.permit import CLEANUP_SECONDS, Permit
from konductor_sdk._engines.semaphore_grants import GrantCoordinator, coordinator
from konductor_sdk._engines.semaphore_holdings import expire_at
from konductor_sdk._engines.semaphore_waiter import (
    REJECTED,
    RESTART,
    Granted,
    Outcome,
    OwnClaim,
    Waiter,
    claim_name,
    spawn_quietly,
)
from konductor_sdk._kernel.cas import ensure_exists, json_patch_status
from konductor_sdk._kernel.claims import (
    create_claim,
    delete_claim_retrying,
    delete_claim_soon,
    order_key,
    target_selector,
)
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.errors import (
    AlreadyExistsError,
    APIError,
    ConfigurationError,
    InvalidObjectError,
    KonductorError,
    NotFoundError,
    PermitLost,
    WouldBlock,
)
from konductor_sdk._kernel.objects import CLAIM, KObject
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.sessions import Session, safety_margin, sessions_of
from konductor_sdk._kernel.validate import check_priority, check_ttl
from konductor_sdk._machines import semaphore_plan as planning
from konductor_sdk._machines.semaphore import LockKind, check_fits, grants

log = logging.getLogger("konductor_sdk.semaphore")
# What a best-effort clean-up may meet: the server's errors, and a client already closed.
CLEANUP_ERRORS: Final = (APIError, KonductorError, RuntimeError)
# Answers to a claim's create that say nothing about whether it was stored: no answer at all
# (status 0: the connection broke, the API server restarted), or a transient server error.
_UNANSWERED: Final = frozenset({0, 429, 500, 502, 503, 504})

__all__ = ["CLEANUP_ERRORS", "Permit", "SemaphoreObject"]


@final
class SemaphoreObject:
    """One Semaphore, Mutex or RWMutex object as this client uses it.

    Args:
        kind: which of the three (``SEMAPHORE_KIND``...).
        ttl: the default session TTL of this object's acquisitions (0: pod-bound).
        create_spec: the spec to create the object with if it is missing (``None``: it
            must exist).
    """

    def __init__(
        self,
        kind: LockKind,
        name: str,
        *,
        namespace: str | None,
        client: Client | None,
        ttl: int,
        create_spec: Mapping[str, Any] | None,
    ) -> None:
        self.kind = kind
        self.name = name
        self._namespace = namespace
        self._client = client
        self.ttl = ttl
        self.create_spec = create_spec
        self.stats: dict[str, int] = dict.fromkeys(
            ("acquired", "released", "waited", "would_block"), 0
        )
        self.waiting = 0

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = default_client()
        return self._client

    @property
    def namespace(self) -> str:
        return self._namespace or (self._client.namespace if self._client else "")

    def describe(self) -> str:
        return f"{self.kind.kind.kind} {self._namespace or '(default)'}/{self.name}"

    async def connect(self) -> Client:
        client = self.client
        await client.connect()
        if self._namespace is None:
            self._namespace = client.namespace
        return client

    def coordinator(self) -> GrantCoordinator:
        return coordinator(self.client, self.kind, self.namespace, self.name)

    def known_coordinator(self) -> GrantCoordinator | None:
        """The coordinator if this object has been used (creates no client)."""
        if self._client is None or not self._namespace:
            return None
        return self.coordinator()

    def check_args(self, priority: object, ttl: object) -> int:
        """Validate per-acquisition arguments; returns the effective TTL."""
        check_priority(priority)
        return self.ttl if ttl is None else check_ttl(ttl, allow_zero=True)

    # -- the object ----------------------------------------------------------------------

    async def read(self, *, fresh: bool = False) -> KObject:
        client = await self.connect()
        watch = client.cached_watch(self.kind.kind, self.namespace)
        obj = watch.get(self.name, self.namespace) if watch is not None and not fresh else None
        if obj is None:
            obj = await client.store.get(self.kind.kind, self.namespace, self.name)
            if watch is not None:
                watch.observe(obj)
        return obj

    async def ensure(self, request: Mapping[str, Any] | None = None) -> KObject:
        """The object, created with ``create_spec`` if missing (when one was given).

        With ``request``, first check that it could ever fit (against the existing spec,
        or the one we would create) and raise :class:`ConfigurationError` before any write.
        """
        try:
            obj = await self.read()
        except NotFoundError:
            if self.create_spec is None:
                raise
            if request is not None:
                check_fits(self.kind, self.create_spec, request, self.describe())
            obj = await ensure_exists(
                self.client, self.kind.kind, self.namespace, self.name, self.create_spec
            )
        if request is not None:
            check_fits(self.kind, obj.spec, request, self.describe())
        return obj

    async def create(self, spec: Mapping[str, Any]) -> KObject:
        """Create the object with ``spec``. Raises ``AlreadyExistsError`` if it exists."""
        client = await self.connect()
        metadata = {"name": self.name, "namespace": self.namespace}
        return await client.store.create(
            self.kind.kind, self.namespace, {"metadata": metadata, "spec": dict(spec)}
        )

    async def delete(self) -> None:
        client = await self.connect()
        await client.store.delete(self.kind.kind, self.namespace, self.name)

    async def patch_spec(self, spec: Mapping[str, Any]) -> KObject:
        """Merge ``spec`` into the object's spec. Waiters that now fit see it on their
        watch and write their grants themselves."""
        client = await self.connect()
        obj = await client.store.patch(
            self.kind.kind, self.namespace, self.name, {"spec": dict(spec)}
        )
        watch = client.cached_watch(self.kind.kind, self.namespace)
        if watch is not None:
            watch.observe(obj)
        return obj

    async def claims(self) -> list[KObject]:
        """The queue (this object's claims) in service order, read fresh."""
        client = await self.connect()
        listed = await client.store.list(
            CLAIM, self.namespace, field_selector=target_selector(self.kind.kind, self.name)
        )
        return sorted((c for c in listed.items if not c.deleting), key=order_key)

    async def force_release(self, who: str) -> tuple[str, ...]:
        """Remove the grants ``who`` names: a key (``slot#token``), a first slot, a holder
        id or a session name. Returns their keys. Removing another user's grant needs the
        ``override`` verb (the admission policy checks)."""
        for attempt in range(1, 4):
            obj = await self.read(fresh=True)
            found = [
                g
                for g in grants(obj.status)
                if who in (f"{g.slot}#{g.token}", str(g.slot), g.holder, g.session)
            ]
            if not found:
                return ()
            ops = [op for g in found for op in planning.release_patch(g.slot, g.token)]
            try:
                await json_patch_status(
                    self.client.store, self.kind.kind, self.namespace, self.name, ops
                )
            except InvalidObjectError:
                if attempt == 3:
                    raise
                continue  # one of them was released meanwhile: judge again
            return tuple(f"{g.slot}#{g.token}" for g in found)
        return ()  # pragma: no cover - the loop returns or raises

    # -- acquiring -----------------------------------------------------------------------

    async def acquire(
        self,
        fields: Mapping[str, Any],
        *,
        priority: int,
        preemptible: bool,
        ttl: int | None,
        allow_burst: bool,
        nowait: bool,
    ) -> Permit:
        """Wait for the grant and return the permit (see ``Semaphore.acquire``)."""
        ttl = self.check_args(priority, ttl)
        client = await self.connect()
        if ttl == 0 and client.identity.pod is None:
            raise ConfigurationError(
                "ttl=0 ('until released or the pod ends') needs a pod identity "
                "(POD_NAME/POD_NAMESPACE); use a ttl in seconds outside a pod"
            )
        # (Never changed, so shared with the caller's when there is nothing to add.)
        wanted = {**fields, "allowBurst": True} if allow_burst else fields
        # The shared watch first: every later read of the object comes from its cache.
        await client.watch(self.kind.kind, self.namespace)
        await self.ensure(wanted)
        # The session first: a user who may not take part at all learns it from this
        # write (ForbiddenError), not from a watch of the claims that never syncs.
        sessions = sessions_of(client)
        session = await sessions.get(ttl)
        await client.whoami()  # a grant records its writer; ask before the first one
        coord = self.coordinator()
        await coord.start()
        direct = True  # the uncontended fast path: no claim, one write
        while True:
            claim: OwnClaim | None = None
            if direct:
                request = planning.Request(
                    id=f"direct-{secrets.token_hex(6)}",
                    priority=priority,
                    preemptible=bool(preemptible),
                    allow_burst=allow_burst,
                    fields=wanted,
                )
            else:
                claim_spec = {
                    **wanted,
                    "priority": priority,
                    "preemptible": bool(preemptible),
                    "ttlSeconds": ttl,
                }
                claim, request = await self._queue(coord, session, claim_spec)
                del claim_spec  # (a parked waiter's frame keeps only what it still needs)
                self.stats["waited"] += 1
            # One wait site, in this frame: a thousand parked waiters are a thousand of
            # these frames, and no second coroutine each.
            waiter = Waiter(request, session, direct)
            self.waiting += claim is not None
            try:
                coord.add(waiter)
                await waiter.decided()
            except BaseException:
                waiter.abandoned = True
                coord.remove(waiter)
                with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                    await self._abandon(coord, waiter)
                if claim is not None:
                    with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                        await self._drop(claim)
                raise
            finally:
                self.waiting -= claim is not None
            outcome = self._decided(coord, waiter)
            if outcome == REJECTED:  # (only a claimless attempt is rejected)
                if nowait:
                    self.stats["would_block"] += 1
                    raise WouldBlock(
                        f"{self.describe()}: not granted at once (not enough free units, "
                        "or others are queued)"
                    )
                direct = False
                continue
            if outcome == RESTART:
                # Our session ended while we waited: the place is forfeit.
                if claim is not None:
                    self._drop_later(claim)
                session = await sessions.get(ttl)
                continue
            if isinstance(outcome, BaseException):
                if claim is not None:
                    self._drop_later(claim)
                raise outcome
            assert isinstance(outcome, Granted)
            if session.lost:
                # Granted, but the write came back after the session's deadline: nothing
                # may be done under it (docs/design.md, 13.1). Give it back, start over.
                await coord.holdings.give_back(outcome)
                if claim is not None:
                    self._drop_later(claim)
                session = await sessions.get(ttl)
                continue
            return self._hand_out(coord, outcome, session, fields, claim)

    async def _queue(
        self, coord: GrantCoordinator, session: Session, spec: Mapping[str, Any]
    ) -> tuple[OwnClaim, planning.Request]:
        """Create our claim (a name chosen here, so a cancelled create can be undone).

        Returns what deleting it needs (name, uid) and its request, made from what we
        sent: the server's answer is not kept (a thousand parked waiters would each pin
        a decoded object; the claim queue's watch holds the claim itself).
        """
        client = coord.client
        name = claim_name(self.name)
        try:
            async with coord.creating:  # bounded: a crowd queues without a crowd of requests
                created = await self._create_claim(client, session, spec, name)
        except BaseException:
            with (
                anyio.move_on_after(CLEANUP_SECONDS, shield=True),
                contextlib.suppress(*CLEANUP_ERRORS),
            ):
                await client.store.delete(CLAIM, self.namespace, name)
            raise
        return OwnClaim(name, created.uid), planning.Request.of_spec(name, spec)

    async def _create_claim(
        self, client: Client, session: Session, spec: Mapping[str, Any], name: str
    ) -> KObject:
        """Create the claim ``name``, through a restart of the API server.

        A create that got no answer (the connection broke: the claim may or may not be
        stored) or a transient error is sent again until the client's retry budget is
        spent. The name is ours, so a create that did land answers AlreadyExists on the
        retry, and the claim is read back (a claim is never changed: it still carries its
        creation resourceVersion, its place in the queue).
        """
        deadline = anyio.current_time() + client.retry_budget
        attempt = 0
        while True:
            attempt += 1
            try:
                return await create_claim(
                    client, session, self.kind.kind, self.name, spec, claim_name=name
                )
            except AlreadyExistsError:
                if attempt == 1:
                    raise
                return await client.store.get(CLAIM, self.namespace, name)
            except APIError as exc:
                if exc.status not in _UNANSWERED or anyio.current_time() >= deadline:
                    raise
            await anyio.sleep(backoff(attempt))

    async def _abandon(self, coord: GrantCoordinator, waiter: Waiter) -> None:
        """Clean up after a waiter whose caller left (cancelled): a grant written for it
        meanwhile is given back, its preemption requests withdrawn."""
        if isinstance(waiter.outcome, Granted):
            await coord.holdings.give_back(waiter.outcome)
        with contextlib.suppress(*CLEANUP_ERRORS):
            await coord.withdraw(waiter)

    def _decided(self, coord: GrantCoordinator, waiter: Waiter) -> Outcome:
        """The outcome of a waiter that was decided (no timer per waiter: the session's
        renewer marks it lost at its deadline, and its loss callback restarts every
        waiter of it, GrantCoordinator._hook)."""
        coord.remove(waiter)
        assert waiter.outcome is not None
        if waiter.asked and not isinstance(waiter.outcome, Granted):
            self._later(coord.withdraw, waiter)
        return waiter.outcome

    def _hand_out(
        self,
        coord: GrantCoordinator,
        granted: Granted,
        session: Session,
        fields: Mapping[str, Any],
        claim: OwnClaim | None,
    ) -> Permit:
        client = self.client
        obj = coord.current()
        resource = coord.resource(obj) if obj is not None else f"{self.describe()}@?"
        deadline = None
        if granted.burst and granted.ttl_seconds:
            # Bounded from the moment we sent the write: an observer sees it only later.
            ttl = granted.ttl_seconds
            deadline = granted.sent + ttl - safety_margin(ttl)
        permit = Permit(
            resource=resource,
            slot=granted.slot,
            weight=granted.weight,
            token=granted.token,
            mode=fields.get("mode"),
            burst=granted.burst,
            session=session,
            clock=client.clock,
            release=self._release,
            granted_rv=int(granted.resource_version or 0),
            deadline=deadline,
            ttl_seconds=granted.ttl_seconds,
        )
        session.holds += 1

        def done() -> None:
            session.holds -= 1
            coord.holdings.forget(permit)

        permit.when_done(done)
        coord.holdings.adopt(permit)
        if claim is not None:
            permit.claim = claim.name
            self._drop_later(claim)
        if deadline is not None:
            self._later(expire_at, client, permit)
        self.stats["acquired"] += 1
        return permit

    async def _release(self, permit: Permit) -> None:
        """The release of one grant: a JSON patch that tests its token (never conflicts)."""
        try:
            # Our own plans skip the claim from now on; other processes until its deletion
            # (already on its way) reaches them.
            if permit.claim is not None:
                self.coordinator().finished_claims.add(permit.claim)
            await self.coordinator().holdings.release(permit.slot, permit.token)
            self.stats["released"] += 1
        finally:
            permit.done()

    def _finished(self, claim: OwnClaim) -> None:
        # Our own plans skip it from now on; other processes once its deletion reaches them.
        coord = self.known_coordinator()
        if coord is not None and claim.name not in coord.waiters:
            coord.finished_claims.add(claim.name)

    async def _drop(self, claim: OwnClaim) -> None:
        """Delete our claim now (a leftover one blocks the queue until our session ends)."""
        self._finished(claim)
        await delete_claim_retrying(self.client, self.namespace, claim.name, claim.uid)

    def _drop_later(self, claim: OwnClaim) -> None:
        self._finished(claim)
        delete_claim_soon(self.client, self.namespace, claim.name, claim.uid)

    def _later(self, func: Any, *args: Any) -> bool:
        """Run ``func(*args)`` in the client's background; ``False`` if it is closing."""
        return spawn_quietly(self.client, func, *args)

    # -- holding -------------------------------------------------------------------------

    @asynccontextmanager
    async def hold(self, **kwargs: Any) -> AsyncIterator[Permit]:
        """``async with``: acquire, hold, release; the body is cancelled if the permit ends
        (or is preempted) while held, and :class:`PermitLost` is raised on exit."""
        permit = await self.acquire(**kwargs)
        reasons: list[str] = []
        # A cancel scope, not a task group, around the body: a task group would wrap the
        # body's own exceptions in an ExceptionGroup.
        with anyio.CancelScope() as body:

            def interrupt(reason: str) -> None:
                reasons.append(reason)
                body.cancel()

            permit.on_end(interrupt)
            try:
                yield permit
            finally:
                if permit.lost and not reasons:
                    reasons.append(permit.lost_reason or "lost")
                try:
                    await permit.release()
                except CLEANUP_ERRORS as exc:
                    log.warning(
                        "%r: release failed, the grant ends with its session: %s", permit, exc
                    )
        if reasons:
            raise PermitLost(
                f"{self.describe()}: permit {permit.key!r} (token {permit.token}) ended "
                f"while held: {reasons[0]}"
            )

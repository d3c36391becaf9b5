"""The client side of the semaphore family: waiting, holding, releasing.

:class:`Semaphore`, :class:`Mutex` and :class:`RWMutex` are thin fronts over one
:class:`Pool`, which runs the pure state functions of :mod:`._semaphore_state` through the
group-commit writer of :mod:`._semaphore_commit` and the shared watch.

*Waiting.* A waiter renews its queue entry and sleeps on the shared watch. Every write
promotes every waiter that fits (see ``plan``), so most waiters never write again after
queueing; only a waiter that the plan names (promotable, or the head needing burst or
preemption) writes, so a release does not start a herd of writes.

*Deadlines.* A holder gives up at ``t + ttl - margin`` where ``t`` is the send time of a
write known to have preceded the grant: the waiter's last renewal (grants by others) or
its own granting write (burst grants are only ever self-granted, so their bound is exact).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, final

import anyio

from konductor_sdk._engines.permit import Permit
from konductor_sdk._engines.semaphore_commit import (
    CLEANUP_SECONDS,
    Committer,
    Op,
    check_int,
    check_ttl,
    committer,
)
from konductor_sdk._kernel.cas import ensure_exists
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.entries import Renewal, new_entry
from konductor_sdk._kernel.errors import (
    APIError,
    ConfigurationError,
    KonductorError,
    NotFoundError,
    PermitLost,
    WouldBlock,
)
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk._machines import semaphore as state

log = logging.getLogger("konductor_sdk.semaphore")
# What a best-effort cleanup may meet: the server's errors, and a client already closed.
CLEANUP_ERRORS = (APIError, KonductorError, RuntimeError)

__all__ = ["Permit", "Pool", "check_int", "check_ttl"]


@final
class Pool:
    """Acquire/hold/release against one object of a semaphore-family kind."""

    def __init__(
        self,
        flavor: state.Flavor,
        name: str,
        *,
        namespace: str | None,
        client: Client | None,
        ttl: int,
        create_spec: Mapping[str, Any] | None,
    ) -> None:
        self.flavor = flavor
        self.name = name
        self._namespace = namespace
        self._client = client
        self.ttl = ttl
        self.create_spec = create_spec
        self.spec_seen: Mapping[str, Any] = create_spec or {}
        self.stats: dict[str, int] = dict.fromkeys(
            ("acquired", "released", "waited", "would_block", "lost", "preempted"), 0
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

    async def connect(self) -> Client:
        client = self.client
        await client.connect()
        if self._namespace is None:
            self._namespace = client.namespace
        return client

    def committer(self) -> Committer:
        return committer(self.client, self.flavor, self.namespace, self.name)

    def known_committer(self) -> Committer | None:
        """The committer if this pool has been used (no client is created for it)."""
        if self._client is None or not self._namespace:
            return None
        return self.committer()

    async def read(self, *, fresh: bool = False) -> KObject:
        client = await self.connect()
        watch = client.cached_watch(self.flavor.kind, self.namespace)
        obj = watch.get(self.name, self.namespace) if watch is not None and not fresh else None
        if obj is None:
            obj = await client.store.get(self.flavor.kind, self.namespace, self.name)
            if watch is not None:
                watch.observe(obj)
        self.spec_seen = obj.spec
        return obj

    async def ensure(self, entry: Mapping[str, Any] | None = None) -> KObject:
        """The object, created with ``create_spec`` if missing (when one was given).

        With ``entry``, first check that it could ever fit (against the existing spec, or
        the one we would create) and raise :class:`ConfigurationError` before any write.
        """
        try:
            obj = await self.read()
        except NotFoundError:
            if self.create_spec is None:
                raise
            if entry is not None:
                state.check_fits(self.flavor, self.create_spec, entry, self.describe())
            obj = await ensure_exists(
                self.client, self.flavor.kind, self.namespace, self.name, self.create_spec
            )
            self.spec_seen = obj.spec
        if entry is not None:
            state.check_fits(self.flavor, obj.spec, entry, self.describe())
        return obj

    async def create(self, spec: Mapping[str, Any]) -> KObject:
        """Create the object with ``spec``.

        Raises:
            AlreadyExistsError: it exists already.
        """
        client = await self.connect()
        metadata = {"name": self.name, "namespace": self.namespace}
        obj = await client.store.create(
            self.flavor.kind, self.namespace, {"metadata": metadata, "spec": dict(spec)}
        )
        self.spec_seen = obj.spec
        return obj

    async def delete(self) -> None:
        client = await self.connect()
        await client.store.delete(self.flavor.kind, self.namespace, self.name)

    async def patch_spec(self, spec: Mapping[str, Any]) -> KObject:
        """Merge ``spec`` into the object's spec, then write the settled status, so that
        waiters that now fit are granted at once (they would also do it themselves on
        seeing the change; this saves them the round trip)."""
        client = await self.connect()
        obj = await client.store.patch(
            self.flavor.kind, self.namespace, self.name, {"spec": dict(spec)}
        )
        watch = client.cached_watch(self.flavor.kind, self.namespace)
        if watch is not None:
            watch.observe(obj)
        return await self.settle()

    async def remove(self, key: str, *, token: int | None = None) -> KObject:
        """Remove ``key`` from holders (if ``token`` matches) and waiters."""

        def op(obj: KObject, status: state.Status) -> None:
            state.release_in_place(status, key, token)

        with self.span("release", key=key, token=token):
            return await self.committer().submit(op)

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
        background: bool,
    ) -> Permit:
        """Queue, wait for the grant, and return the permit (see ``Semaphore.acquire``)."""
        ttl = self.check_args(priority, ttl)
        entry_fields = {**fields, "priority": priority, "preemptible": bool(preemptible)}
        if allow_burst:
            entry_fields["allowBurst"] = True
        client = await self.connect()
        if ttl == 0 and client.identity.pod is None:
            raise ConfigurationError(
                "ttl=0 ('until released or the pod ends') needs a pod identity "
                "(POD_NAME/POD_NAMESPACE); use a ttl in seconds outside a pod"
            )
        watch = await client.watch(self.flavor.kind, self.namespace)
        await self.ensure(entry_fields)
        keys: list[str] = [client.identity.new_key()]
        tally = [0]  # write attempts, for telemetry
        start = client.clock.monotonic()
        with self.span(
            "acquire", weight=fields.get("weight"), priority=priority, nowait=nowait
        ) as sp:
            try:
                permit = await self._acquire(client, watch, keys, ttl, entry_fields, nowait, tally)
            except WouldBlock:
                self.stats["would_block"] += 1
                raise  # nothing was written: the failed try ran on a copy
            except BaseException:
                # Leave the queue, or give back a grant we will never use: shielded, since
                # a cancelled caller must not leave an entry behind.
                with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                    await self._remove_all(keys)
                raise
            waited = client.clock.monotonic() - start
            sp.set_attribute("konductor.token", permit.token)
            sp.set_attribute("konductor.attempts", tally[0])
            sp.set_attribute("konductor.wait_seconds", waited)
        self.stats["acquired"] += 1
        if background:
            client.spawn(self.keepalive, permit, None)
        return permit

    async def _remove_all(self, keys: list[str]) -> None:
        def op(obj: KObject, status: state.Status) -> None:
            for key in keys:
                state.release_in_place(status, key)

        try:
            await self.committer().submit(op)
        except NotFoundError:
            pass  # deleted, entries and all
        except CLEANUP_ERRORS as exc:
            log.warning(
                "could not leave %s/%s (entry will expire): %s", self.namespace, self.name, exc
            )

    @contextmanager
    def span(self, op: str, **attributes: Any) -> Iterator[Any]:
        """An OpenTelemetry span ``konductor.semaphore.<op>`` about this object."""
        with span(
            f"semaphore.{op}",
            kind=self.flavor.kind.kind,
            namespace=self.namespace,
            **attributes,
        ) as sp:
            sp.set_attribute("konductor.name", self.name)
            yield sp

    def check_args(self, priority: object, ttl: object) -> int:
        """Validate per-acquisition arguments; returns the effective TTL."""
        check_int(priority, "priority", state.PRIORITY_MIN, state.PRIORITY_MAX)
        return self.ttl if ttl is None else check_ttl(ttl)

    def describe(self) -> str:
        return f"{self.flavor.kind.kind} {self._namespace or '(default)'}/{self.name}"

    def _request_op(self, key: str, entry: Mapping[str, Any], nowait: bool, drop: str = "") -> Op:
        what = self.describe()

        def op(obj: KObject, status: state.Status) -> None:
            now = rfc3339(self.client.clock.now())
            # Ops raise before changing anything: a batch keeps the others' changes.
            state.check_fits(self.flavor, obj.spec, entry, what)
            if not nowait:
                if drop:
                    state.release_in_place(status, drop)
                state.request_in_place(
                    self.flavor, obj.spec, status, key, entry, now=now, nowait=False, what=what
                )
                return
            # A failed try must leave no trace (no queue entry, no preemption request).
            trial = copy.deepcopy(status)
            state.request_in_place(
                self.flavor, obj.spec, trial, key, entry, now=now, nowait=True, what=what
            )
            status.clear()
            status.update(trial)

        return op

    async def _acquire(
        self,
        client: Client,
        watch: KindWatch,
        keys: list[str],
        ttl: int,
        fields: Mapping[str, Any],
        nowait: bool,
        tally: list[int],
    ) -> Permit:
        committer = self.committer()
        entry = new_entry(client, ttl, **fields)
        sent_at = [client.clock.monotonic()]  # replaced by the write's own send time
        obj = await committer.submit(
            self._request_op(keys[-1], entry, nowait), tally=tally, sent=sent_at
        )
        sent = sent_at[0]
        self.spec_seen = obj.spec
        holders = obj.status.get("holders") or {}
        if keys[-1] in holders:
            return Permit(self, keys[-1], holders[keys[-1]], sent)
        self.stats["waited"] += 1
        self.waiting += 1
        try:
            with self.span("wait"):
                while True:
                    waiter = (obj.status.get("waiters") or {}).get(keys[-1])
                    ticket = int(waiter["ticket"]) if waiter else 0
                    renewal = Renewal(
                        client=client,
                        kind=self.flavor.kind,
                        namespace=self.namespace,
                        name=self.name,
                        path=("status", "waiters", keys[-1]),
                        expect={"holder": entry["holder"], "ticket": ticket},
                        ttl_seconds=ttl,
                        last_ok_sent=sent,
                    )
                    granted = await self._wait(watch, keys[-1], renewal, sent, tally)
                    if granted is not None:
                        return granted
                    # Our queue entry could not be renewed or was reaped: decide on fresh
                    # state, then queue again at the back (our place is forfeit).
                    obj = await self.read(fresh=True)
                    held = (obj.status.get("holders") or {}).get(keys[-1])
                    if held is not None and not held.get("burst"):
                        return Permit(self, keys[-1], held, renewal.last_ok_sent)
                    keys.append(client.identity.new_key())
                    entry = new_entry(client, ttl, **fields)
                    sent_at = [client.clock.monotonic()]
                    obj = await committer.submit(
                        self._request_op(keys[-1], entry, False, drop=keys[-2]),
                        tally=tally,
                        sent=sent_at,
                    )
                    sent = sent_at[0]
                    holders = obj.status.get("holders") or {}
                    if keys[-1] in holders:
                        return Permit(self, keys[-1], holders[keys[-1]], sent)
        finally:
            self.waiting -= 1

    async def _wait(
        self, watch: KindWatch, key: str, renewal: Renewal, enqueued: float, tally: list[int]
    ) -> Permit | None:
        """Wait (renewing the queue entry) until granted; ``None`` if the entry was lost."""
        granted: Permit | None = None
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                if renewal.ttl_seconds > 0:
                    tg.start_soon(renewal.run, lambda reason: scope.cancel())
                try:
                    granted = await self._wait_loop(watch, key, renewal, enqueued, tally)
                except Exception as exc:  # raised below, not wrapped in an ExceptionGroup
                    error = exc
            tg.cancel_scope.cancel()
        if error is not None:
            raise error
        return granted

    async def _wait_loop(
        self, watch: KindWatch, key: str, renewal: Renewal, enqueued: float, tally: list[int]
    ) -> Permit | None:
        committer = self.committer()
        while True:
            changed = watch.next_change(self.name, self.namespace)
            obj = watch.get(self.name, self.namespace)
            if obj is None:
                raise NotFoundError(
                    f"{self.flavor.kind.kind} {self.namespace}/{self.name} was deleted "
                    "while waiting",
                    status=404,
                )
            self.spec_seen = obj.spec
            st = obj.status
            held = (st.get("holders") or {}).get(key)
            if held is not None:
                # Granted by someone else's write (never a burst grant) or, defensively,
                # by one of ours whose result we did not see: the enqueue is a safe base.
                base = renewal.last_ok_sent if not held.get("burst") else enqueued
                return Permit(self, key, held, base)
            if key not in (st.get("waiters") or {}):
                return None
            if committer.plan(obj).needs_write_by(key):
                # Replaced by the send time of the write, if one is made; a burst grant we
                # see without having made a write would predate it, so the enqueue is the
                # (conservative) fallback.
                sent_at = [enqueued]

                def op(o: KObject, status: state.Status) -> None:
                    if key in (status.get("waiters") or {}):
                        state.self_grant_in_place(
                            self.flavor,
                            o.spec,
                            status,
                            key,
                            now=rfc3339(self.client.clock.now()),
                        )

                written = await committer.submit(op, tally=tally, sent=sent_at)
                watch.observe(written)  # a conflict's re-read may be newer than the cache
                held = (written.status.get("holders") or {}).get(key)
                if held is not None:
                    base = sent_at[0] if held.get("burst") else renewal.last_ok_sent
                    return Permit(self, key, held, base)
                if written.resource_version != obj.resource_version:
                    continue
            await changed.wait()

    # -- holding -------------------------------------------------------------------------

    async def keepalive(self, permit: Permit, interrupt: Callable[[str], None] | None) -> None:
        """Renew ``permit`` and watch its entry until released or lost.

        On loss (deadline passed without a renewal, entry removed, object deleted) the
        permit is marked lost, ``interrupt`` is called (the ``async with`` form cancels its
        body there), and the entry is given back if it is still ours. A preemption request
        sets ``permit.preempt_requested``, calls ``interrupt`` and stops renewing, so even
        a holder that ignores the request yields within one TTL.
        """
        if permit.released:
            return
        try:
            await self._keep(permit, interrupt)
        except anyio.get_cancelled_exc_class():
            if not permit.released:
                # The client is closing under a holder: nobody renews the entry any more,
                # so the holder must stop trusting it now, not when someone reaps it.
                permit._mark_lost("the client was closed while holding")
                if interrupt is not None:
                    interrupt("the client was closed while holding")
            raise
        except Exception as exc:
            # Runs in the client's task group: an error here must not take the client's
            # watches down with it. Without its keeper the permit cannot be trusted.
            log.exception("%r: keeper failed", permit)
            permit._mark_lost(f"keeper failed: {exc!r}")
            if interrupt is not None:
                interrupt(f"keeper failed: {exc!r}")
        if permit.lost and not permit.released:
            try:
                await permit.release()
            except NotFoundError:
                pass  # the object is gone, and the entry with it
            except CLEANUP_ERRORS as exc:
                log.warning("%r: could not give back the lost entry: %s", permit, exc)

    async def _keep(self, permit: Permit, interrupt: Callable[[str], None] | None) -> None:
        async with anyio.create_task_group() as tg:
            permit._keep_scope = tg.cancel_scope
            renew_scope = anyio.CancelScope()

            def lost(reason: str) -> None:
                permit._mark_lost(reason)
                if interrupt is not None:
                    interrupt(reason)
                tg.cancel_scope.cancel()

            def preempted() -> None:
                self.stats["preempted"] += 1
                permit.preempt_requested.set()
                if interrupt is not None:
                    interrupt("preempted by a higher-priority waiter")
                renew_scope.cancel()
                if permit.renewal is not None:
                    tg.start_soon(self._expire_at, permit, permit.renewal.deadline, lost)

            if permit.renewal is not None and permit.burst:
                tg.start_soon(self._expire_at, permit, permit.renewal.deadline, lost)
            elif permit.renewal is not None:
                tg.start_soon(self._renew, permit.renewal, renew_scope, lost)
            tg.start_soon(self._watch_entry, permit, lost, preempted)

    async def _renew(
        self, renewal: Renewal, scope: anyio.CancelScope, lost: Callable[[str], None]
    ) -> None:
        with scope:
            await renewal.run(lost)

    async def _expire_at(
        self, permit: Permit, deadline: float, lost: Callable[[str], None]
    ) -> None:
        clock = self.client.clock
        # Sleep in slices: the clock may be a test's FakeClock that jumps.
        while (left := deadline - clock.monotonic()) > 0:  # noqa: ASYNC110 - see above
            await anyio.sleep(min(left, 0.5))
        why = "burst grant reached its time bound" if permit.burst else "preempted; not renewed"
        lost(f"{why} ({permit.ttl_seconds}s)")

    async def _watch_entry(
        self, permit: Permit, lost: Callable[[str], None], preempted: Callable[[], None]
    ) -> None:
        try:
            watch = await self.client.watch(self.flavor.kind, self.namespace)
            await self._follow_entry(watch, permit, lost, preempted)
        except APIError as exc:
            # The shared watch failed (forbidden, or the server unreachable past the
            # client's retry budget): a removal could no longer be seen, so stop trusting.
            lost(f"cannot watch the object any more: {exc}")

    async def _follow_entry(
        self,
        watch: KindWatch,
        permit: Permit,
        lost: Callable[[str], None],
        preempted: Callable[[], None],
    ) -> None:
        while True:
            changed = watch.next_change(self.name, self.namespace)
            obj = watch.get(self.name, self.namespace)
            if obj is None:
                lost("the object was deleted")
                return
            entry = (obj.status.get("holders") or {}).get(permit.key)
            if entry is None or int(entry.get("token", -1)) != permit.token:
                lost("the entry was removed (reaped after its TTL, or force-released)")
                return
            if entry.get("preemptRequested") and not permit.preempt_requested.is_set():
                preempted()
            await changed.wait()

    @asynccontextmanager
    async def hold(self, **kwargs: Any) -> AsyncIterator[Permit]:
        """``async with``: acquire, keep alive, release; the body is cancelled if the
        permit ends (or is preempted) while held, and :class:`PermitLost` raised on exit."""
        permit = await self.acquire(**kwargs, background=False)
        reasons: list[str] = []
        # A cancel scope, not a task group, around the body: a task group would wrap the
        # body's own exceptions in an ExceptionGroup. The keeper runs in the client's task
        # group and is stopped by release() below, so it still ends with this block.
        with anyio.CancelScope() as body:

            def interrupt(reason: str) -> None:
                reasons.append(reason)
                body.cancel()

            self.client.spawn(self.keepalive, permit, interrupt)
            try:
                yield permit
            finally:
                try:
                    await permit.release()
                except NotFoundError:
                    pass  # deleted: the loss is reported below
                except CLEANUP_ERRORS as exc:
                    log.warning("%r: release failed, the entry will expire: %s", permit, exc)
        if permit.lost or body.cancelled_caught:
            why = permit.lost_reason or (reasons[0] if reasons else "lost")
            raise PermitLost(
                f"{self.flavor.kind.kind} {self.namespace}/{self.name}: permit "
                f"{permit.key!r} (token {permit.token}) ended while held: {why}"
            )

    async def force_release(self, who: str) -> tuple[str, ...]:
        """Remove holders by key or holder id (admin); returns the removed keys."""
        await self.connect()
        removed: list[tuple[str, ...]] = []

        def op(obj: KObject, status: state.Status) -> None:
            removed[:] = [state.force_release_in_place(status, who)]

        await self.committer().submit(op)
        return removed[0] if removed else ()

    async def settle(self) -> KObject:
        """Write the settled state now (after a spec change: wakes waiters at once)."""
        await self.connect()
        return await self.committer().submit(lambda obj, status: None)

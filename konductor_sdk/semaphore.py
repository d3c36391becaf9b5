"""Semaphore: weighted permits shared by every process of a cluster.

::

    sem = Semaphore("gpu-pool", permits=4)       # created with permits=4 if missing
    async with sem as permit:                    # one unit; renewed while held
        await train(fencing_token=permit.token)
    async with sem.hold(weight=2, priority=5):   # two units, served before priority < 5
        ...
    permit = await sem.acquire_nowait()          # WouldBlock instead of waiting
    await permit.release()

Safety never depends on the operator: grants are compare-and-swap writes that keep the sum
of held weights within ``spec.permits`` (``+ spec.burst`` only for time-bounded burst
grants). The full semantics (fairness, preemption, burst, TTL, re-entrancy) are in
``docs/semaphore.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, final

import anyio
import attrs

from konductor_sdk._engines.semaphore import Permit, Pool, check_int, check_ttl
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import ConfigurationError, NotFoundError
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines import semaphore as state

DEFAULT_TTL = 30

__all__ = [
    "HolderInfo",
    "Permit",
    "Semaphore",
    "SemaphoreStatistics",
    "SemaphoreStatus",
    "WaiterInfo",
]


@final
@attrs.frozen
class HolderInfo:
    """One grant as recorded in ``status.holders``."""

    key: str
    holder: str
    pod: str | None
    weight: int
    priority: int
    token: int
    preemptible: bool
    preempt_requested: bool
    burst: bool
    mode: str | None
    ttl_seconds: int
    renew_count: int
    granted_at: str | None


@final
@attrs.frozen
class WaiterInfo:
    """One queued request as recorded in ``status.waiters``."""

    key: str
    holder: str
    pod: str | None
    weight: int
    priority: int
    ticket: int
    preemptible: bool
    allow_burst: bool
    mode: str | None
    ttl_seconds: int
    renew_count: int


@final
@attrs.frozen
class SemaphoreStatus:
    """A snapshot of a Semaphore, Mutex or RWMutex object (``await x.status()``).

    ``limit`` is ``spec.permits`` (1 for a Mutex, ``spec.maxReaders`` for an RWMutex);
    ``waiters`` are in service order.
    """

    kind: str
    name: str
    namespace: str
    limit: int
    burst: int
    burst_seconds: int
    in_use: int
    available: int
    phase: str
    fencing_token: int
    holders: tuple[HolderInfo, ...]
    waiters: tuple[WaiterInfo, ...]
    generation: int
    observed_generation: int


@final
@attrs.frozen
class SemaphoreStatistics:
    """What this process did through one front object (``x.statistics()``).

    ``writes``/``conflicts`` count CAS writes (and lost races) of this process on the
    object, shared by every front object of the same client.
    """

    acquired: int
    released: int
    waited: int
    would_block: int
    lost: int
    preempted: int
    waiting: int
    writes: int
    conflicts: int


def check_namespace(namespace: str | None) -> str | None:
    if namespace is None:
        return None
    check_object_name(namespace, field="namespace")
    if len(namespace) > 63 or "." in namespace:
        raise ConfigurationError(
            f"namespace must be a DNS label (at most 63 characters, no '.'), got {namespace!r}"
        )
    return namespace


def status_of(pool: Pool, obj: KObject) -> SemaphoreStatus:
    """Convert an object of the semaphore family into a :class:`SemaphoreStatus`."""
    flavor, spec = pool.flavor, obj.spec
    st = state.normalize_for(flavor)(spec, dict(obj.status))

    def pod(e: Mapping[str, Any]) -> str | None:
        ref = e.get("pod")
        return str(ref.get("name")) if isinstance(ref, Mapping) and ref.get("name") else None

    holders = tuple(
        HolderInfo(
            key=k,
            holder=str(e.get("holder", "")),
            pod=pod(e),
            weight=flavor.weight(spec, e),
            priority=int(e.get("priority", 0)),
            token=int(e.get("token", 0)),
            preemptible=bool(e.get("preemptible")),
            preempt_requested=bool(e.get("preemptRequested")),
            burst=bool(e.get("burst")),
            mode=e.get("mode"),
            ttl_seconds=int(e.get("ttlSeconds", 0)),
            renew_count=int(e.get("renewCount", 0)),
            granted_at=e.get("grantedAt"),
        )
        for k, e in sorted(
            (obj.status.get("holders") or {}).items(), key=lambda kv: kv[1].get("token", 0)
        )
    )
    waiters = tuple(
        WaiterInfo(
            key=k,
            holder=str(e.get("holder", "")),
            pod=pod(e),
            weight=flavor.weight(spec, e),
            priority=int(e.get("priority", 0)),
            ticket=int(e.get("ticket", 0)),
            preemptible=bool(e.get("preemptible")),
            allow_burst=bool(e.get("allowBurst")),
            mode=e.get("mode"),
            ttl_seconds=int(e.get("ttlSeconds", 0)),
            renew_count=int(e.get("renewCount", 0)),
        )
        for k, e in state.queue(obj.status)
    )
    return SemaphoreStatus(
        kind=flavor.kind.kind,
        name=obj.name,
        namespace=obj.namespace,
        limit=flavor.limit(spec),
        burst=flavor.burst(spec),
        burst_seconds=state.burst_seconds(spec),
        in_use=int(st["inUse"]),
        available=int(st["available"]),
        phase=str(st.get("phase", "")),
        fencing_token=int(obj.status.get("fencingToken", 0)),
        holders=holders,
        waiters=waiters,
        generation=obj.generation,
        observed_generation=int(obj.status.get("observedGeneration", 0)),
    )


async def changes_of(pool: Pool) -> AsyncIterator[SemaphoreStatus]:
    """The object's status now and after every change, from the client's shared watch
    (no polling); changes that arrive while the consumer is busy are coalesced.

    Raises:
        NotFoundError: the object does not exist (or was deleted).
        APIError: the watch failed (forbidden, or the server unreachable past the
            client's retry budget).
    """
    client = await pool.connect()
    watch = await client.watch(pool.flavor.kind, pool.namespace)
    while True:
        changed = watch.next_change(pool.name, pool.namespace)  # before reading the cache
        obj = watch.get(pool.name, pool.namespace)
        if obj is None:
            raise NotFoundError(
                f"{pool.flavor.kind.kind} {pool.namespace}/{pool.name} does not exist",
                status=404,
            )
        yield status_of(pool, obj)
        await changed.wait()


def statistics_of(pool: Pool) -> SemaphoreStatistics:
    committer = pool.known_committer()
    return SemaphoreStatistics(
        acquired=pool.stats["acquired"],
        released=pool.stats["released"],
        waited=pool.stats["waited"],
        would_block=pool.stats["would_block"],
        lost=pool.stats["lost"],
        preempted=pool.stats["preempted"],
        waiting=pool.waiting,
        writes=committer.writes if committer else 0,
        conflicts=committer.conflicts if committer else 0,
    )


class TaskStack:
    """``async with obj:`` for objects used by many tasks at once: one context per task."""

    def __init__(self) -> None:
        self._cms: dict[int, list[AbstractAsyncContextManager[Permit]]] = {}

    async def enter(self, cm: AbstractAsyncContextManager[Permit]) -> Permit:
        permit = await cm.__aenter__()
        self._cms.setdefault(anyio.get_current_task().id, []).append(cm)
        return permit

    async def exit(self, *exc_info: Any) -> bool | None:
        task = anyio.get_current_task().id
        stack = self._cms[task]
        cm = stack.pop()
        if not stack:
            del self._cms[task]
        suppress: bool | None = await cm.__aexit__(*exc_info)
        return suppress


@final
class Semaphore:
    """A counting semaphore stored in a ``Semaphore`` custom resource.

    Args:
        name: the object's name (DNS subdomain).
        permits: ``spec.permits`` to create the object with if it does not exist;
            ``None``: it must exist (``NotFoundError`` otherwise). An existing object
            keeps its own spec.
        burst: ``spec.burst`` when creating: extra units for time-bounded burst grants.
        burst_seconds: ``spec.burstSeconds`` when creating: the longest a burst grant lasts.
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: seconds a holder or waiter may go without renewal before it can be reaped
            (renewed every ``ttl/3`` while held); 0: held until released or the pod ends
            (only in a pod).

    Raises:
        ConfigurationError: an argument is out of range (nothing is written).
    """

    def __init__(
        self,
        name: str,
        *,
        permits: int | None = None,
        burst: int = 0,
        burst_seconds: int = state.BURST_SECONDS_DEFAULT,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        check_object_name(name)
        check_namespace(namespace)
        if permits is not None:
            check_int(permits, "permits", 1, state.PERMITS_MAX)
        check_int(burst, "burst", 0, state.PERMITS_MAX)
        check_int(burst_seconds, "burst_seconds", 1, state.BURST_SECONDS_MAX)
        spec = None
        if permits is not None:
            spec = {"permits": permits, "burst": burst, "burstSeconds": burst_seconds}
        self._permits = permits
        self._pool = Pool(
            state.SEMAPHORE_FLAVOR,
            name,
            namespace=namespace,
            client=client,
            ttl=check_ttl(ttl),
            create_spec=spec,
        )
        self._stack = TaskStack()

    def __repr__(self) -> str:
        permits = self._permits if self._permits is not None else "(existing)"
        return f"<Semaphore {self._pool.namespace or '(default)'}/{self.name} permits={permits}>"

    @property
    def name(self) -> str:
        return self._pool.name

    @property
    def namespace(self) -> str | None:
        """The namespace, once known (given, or learnt from the client on first use)."""
        return self._pool.namespace or None

    async def __aenter__(self) -> Permit:
        return await self._stack.enter(self.hold())

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._stack.exit(*exc_info)

    def _kwargs(
        self, weight: int, priority: int, preemptible: bool, ttl: int | None, burst: bool
    ) -> dict[str, Any]:
        check_int(weight, "weight", 1, state.PERMITS_MAX)
        self._pool.check_args(priority, ttl)
        return {
            "fields": {"weight": weight},
            "priority": priority,
            "preemptible": preemptible,
            "ttl": ttl,
            "allow_burst": burst,
        }

    def hold(
        self,
        *,
        weight: int = 1,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
        burst: bool = False,
    ) -> AbstractAsyncContextManager[Permit]:
        """``async with sem.hold(...) as permit``: acquire, renew while held, release.

        If the permit ends while held (renewal impossible before its TTL, removed by an
        admin, object deleted) or a higher-priority waiter preempts it, the body is
        cancelled and :class:`~konductor_sdk.PermitLost` is raised on exit.

        Args:
            weight: units to take, 1..limit.
            priority: higher is served first, in [-1000000, 1000000].
            preemptible: a waiter of higher priority may ask this holder to yield.
            ttl: entry TTL in seconds (default: the semaphore's).
            burst: accept a burst grant (``spec.burst`` units beyond the limit, lasting
                at most ``min(ttl, spec.burstSeconds)``, not renewable) when the limit is
                full.

        Raises:
            ConfigurationError: bad arguments, or a weight that can never fit.
        """
        return self._pool.hold(
            **self._kwargs(weight, priority, preemptible, ttl, burst), nowait=False
        )

    async def acquire(
        self,
        *,
        weight: int = 1,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
        burst: bool = False,
    ) -> Permit:
        """Wait for ``weight`` units; the permit is renewed in the client's background
        until :meth:`Permit.release`. Loss is reported on ``permit.lost``/``wait_lost()``.

        Arguments as for :meth:`hold`. Cancelling the call leaves the queue, and releases
        a permit granted just before the cancellation.

        Raises:
            ConfigurationError: bad arguments, or a weight that can never fit.
            NotFoundError: the object does not exist (and ``permits`` was not given), or
                was deleted while waiting.
        """
        kwargs = self._kwargs(weight, priority, preemptible, ttl, burst)
        return await self._pool.acquire(**kwargs, nowait=False, background=True)

    async def acquire_nowait(
        self,
        *,
        weight: int = 1,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
        burst: bool = False,
    ) -> Permit:
        """Like :meth:`acquire`, but only if the grant can be made at once.

        Raises:
            WouldBlock: not enough free units, or earlier/higher waiters are queued.
        """
        kwargs = self._kwargs(weight, priority, preemptible, ttl, burst)
        return await self._pool.acquire(**kwargs, nowait=True, background=True)

    async def create(
        self,
        *,
        permits: int | None = None,
        burst: int | None = None,
        burst_seconds: int | None = None,
    ) -> SemaphoreStatus:
        """Create the object (defaults: the constructor's values).

        Raises:
            ConfigurationError: no ``permits`` here nor in the constructor, or out of range.
            AlreadyExistsError: it exists already.
        """
        base = self._pool.create_spec or {}
        permits = permits if permits is not None else base.get("permits")
        if permits is None:
            raise ConfigurationError("permits is required to create a Semaphore")
        spec = {
            "permits": check_int(permits, "permits", 1, state.PERMITS_MAX),
            "burst": check_int(
                burst if burst is not None else base.get("burst", 0), "burst", 0, state.PERMITS_MAX
            ),
            "burstSeconds": check_int(
                burst_seconds if burst_seconds is not None else base.get("burstSeconds", 60),
                "burst_seconds",
                1,
                state.BURST_SECONDS_MAX,
            ),
        }
        return status_of(self._pool, await self._pool.create(spec))

    async def delete(self) -> None:
        """Delete the object; every holder's permit is lost, every waiter fails."""
        await self._pool.delete()

    async def status(self) -> SemaphoreStatus:
        """A fresh snapshot from the server."""
        return status_of(self._pool, await self._pool.read(fresh=True))

    async def set_permits(
        self, permits: int, *, burst: int | None = None, burst_seconds: int | None = None
    ) -> SemaphoreStatus:
        """Change ``spec.permits`` (and optionally the burst settings).

        Waiters that now fit are granted at once (this call writes the settled status).
        Lowering the limit revokes nothing: it only stops new grants until enough units
        are released.
        """
        spec: dict[str, Any] = {"permits": check_int(permits, "permits", 1, state.PERMITS_MAX)}
        if burst is not None:
            spec["burst"] = check_int(burst, "burst", 0, state.PERMITS_MAX)
        if burst_seconds is not None:
            spec["burstSeconds"] = check_int(
                burst_seconds, "burst_seconds", 1, state.BURST_SECONDS_MAX
            )
        return status_of(self._pool, await self._pool.patch_spec(spec))

    async def force_release(self, who: str) -> tuple[str, ...]:
        """Remove grants by acquisition key or holder id (admin/CLI); returns the keys.

        The affected holders see their permits lost (their ``async with`` body is
        cancelled). Use it for holders you know are dead; the operator does the same
        automatically after their TTL or when their pod ends.
        """
        return await self._pool.force_release(who)

    def changes(self) -> AsyncIterator[SemaphoreStatus]:
        """``async for status in sem.changes():`` the status now and after every change
        (grants, releases, queueing), from the client's shared watch; a consumer that is
        busy sees the latest state, not every intermediate one.

        Raises:
            NotFoundError: the object does not exist, or was deleted.
            APIError: the watch failed (``ForbiddenError``, ``UnreachableError``).
        """
        return changes_of(self._pool)

    def statistics(self) -> SemaphoreStatistics:
        return statistics_of(self._pool)

"""Semaphore: weighted permits shared by every process of a cluster.

::

    sem = Semaphore("gpu-pool", permits=4)       # created with permits=4 if missing
    async with sem as permit:                    # one unit, for the block
        fence.admit(permit.fencing)              # per-slot fencing downstream
    async with sem.hold(weight=2, priority=5):   # two units, served before priority < 5
        ...
    permit = await sem.acquire_nowait()          # WouldBlock instead of waiting
    await permit.release()

Safety never depends on the operator: grants are conditional writes the API server checks
(the limit, non-overlapping slots, the fencing counter). Semantics (fairness, preemption,
burst, sessions, fencing) are in ``docs/semaphore.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, final

import anyio
import attrs

from konductor_sdk._engines.semaphore import Permit, SemaphoreObject
from konductor_sdk._kernel.claims import claim_queue
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import ConfigurationError, NotFoundError
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.sessions import DEFAULT_TTL as DEFAULT_TTL
from konductor_sdk._kernel.validate import check_int, check_ttl
from konductor_sdk._kernel.waiting import wait_any
from konductor_sdk._kernel.watch import rv_int
from konductor_sdk._machines import semaphore as state

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
    """One grant as recorded in ``status.holders``.

    ``key`` is ``"<first slot>#<token>"``; the grant holds slots ``slot .. slot+weight-1``.
    ``ttl_seconds`` is set only on time-bounded grants (burst, or yielding to preemption).
    """

    key: str
    slot: int
    holder: str
    session: str
    creator: str
    claim: str | None
    weight: int
    priority: int
    token: int
    preemptible: bool
    preempt_requested: bool
    burst: bool
    mode: str | None
    ttl_seconds: int | None
    granted_at: str | None


@final
@attrs.frozen
class WaiterInfo:
    """One queued request (a ``Claim``), in service order.

    ``key`` is the claim's name; ``ticket`` its creation resourceVersion (arrival order).
    """

    key: str
    holder: str
    session: str
    pod: str | None
    weight: int
    priority: int
    ticket: int
    preemptible: bool
    allow_burst: bool
    mode: str | None
    ttl_seconds: int


@final
@attrs.frozen
class SemaphoreStatus:
    """A snapshot of a Semaphore, Mutex or RWMutex object (``await x.status()``).

    ``limit`` is ``spec.permits`` (1 for a Mutex, ``spec.maxReaders`` for an RWMutex);
    ``in_use``/``available``/``phase`` are computed from the grants (the stored
    aggregates are the operator's and may lag); ``waiters`` are in service order.
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

    ``writes``/``conflicts`` count the grant writes (and lost races) of this client on
    the object, shared by every front object of the same client; ``lost``/``preempted``
    count this client's permits on the object.
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


def _pod_name(ref: Any) -> str | None:
    return str(ref.get("name")) if isinstance(ref, Mapping) and ref.get("name") else None


def status_of(handle: SemaphoreObject, obj: KObject, claims: list[KObject]) -> SemaphoreStatus:
    """A :class:`SemaphoreStatus` of an object of the semaphore family and its queue."""
    kind, spec = handle.kind, obj.spec
    st = state.normalize_for(kind)(spec, dict(obj.status))
    asked = state.preempt_requests(obj.status)
    raw = obj.status.get("holders") or {}
    holders = tuple(
        HolderInfo(
            key=f"{g.slot}#{g.token}",
            slot=g.slot,
            holder=g.holder,
            session=g.session,
            creator=g.creator,
            claim=g.claim,
            weight=g.weight,
            priority=g.priority,
            token=g.token,
            preemptible=g.preemptible,
            preempt_requested=g.token in asked,
            burst=g.burst,
            mode=g.mode,
            ttl_seconds=g.deadline_seconds,
            granted_at=(raw.get(str(g.slot)) or {}).get("grantedAt"),
        )
        for g in sorted(state.grants(obj.status), key=lambda g: g.token)
    )
    granted = {h.claim for h in holders if h.claim}
    waiters = tuple(
        WaiterInfo(
            key=c.name,
            holder=str(c.spec.get("holder", "")),
            session=str(c.spec.get("session", "")),
            pod=_pod_name(c.spec.get("pod")),
            weight=kind.weight(spec, c.spec),
            priority=int(c.spec.get("priority", 0)),
            ticket=rv_int(c.resource_version),
            preemptible=c.spec.get("preemptible") is True,
            allow_burst=c.spec.get("allowBurst") is True,
            mode=c.spec.get("mode"),
            ttl_seconds=int(c.spec.get("ttlSeconds", 0)),
        )
        for c in claims
        if c.name not in granted
    )
    return SemaphoreStatus(
        kind=kind.kind.kind,
        name=obj.name,
        namespace=obj.namespace,
        limit=kind.limit(spec),
        burst=kind.burst(spec),
        burst_seconds=state.burst_seconds(spec),
        in_use=int(st["inUse"]),
        available=int(st["available"]),
        phase=str(st.get("phase", "")),
        fencing_token=state.fencing_token(obj.status),
        holders=holders,
        waiters=waiters,
        generation=obj.generation,
        observed_generation=int(obj.status.get("observedGeneration", 0)),
    )


async def read_status(handle: SemaphoreObject) -> SemaphoreStatus:
    """A fresh :class:`SemaphoreStatus` (the object and its claims, read now)."""
    obj = await handle.read(fresh=True)
    return status_of(handle, obj, await handle.claims())


async def changes_of(handle: SemaphoreObject) -> AsyncIterator[SemaphoreStatus]:
    """The status now and after every change of the object or its queue, from the
    client's shared watches (no polling); changes that arrive while the consumer is busy
    are coalesced.

    Raises:
        NotFoundError: the object does not exist (or was deleted).
        APIError: a watch failed (forbidden, or the server unreachable past the client's
            retry budget).
    """
    client = await handle.connect()
    kind, namespace = handle.kind.kind, handle.namespace
    watch = await client.watch(kind, namespace)
    async with claim_queue(client, kind, handle.name, namespace) as queue:
        while True:
            # Both events before reading the caches: nothing between read and wait is lost.
            changed = watch.next_change(handle.name, namespace)
            queued = queue.next_change()
            obj = watch.get(handle.name, namespace)
            if obj is None:
                raise NotFoundError(f"{handle.describe()} does not exist", status=404)
            claims = [c for c in queue.ordered() if not c.deleting]
            yield status_of(handle, obj, claims)
            await wait_any(changed, queued)


def statistics_of(handle: SemaphoreObject) -> SemaphoreStatistics:
    coord = handle.known_coordinator()
    return SemaphoreStatistics(
        acquired=handle.stats["acquired"],
        released=handle.stats["released"],
        waited=handle.stats["waited"],
        would_block=handle.stats["would_block"],
        lost=coord.holdings.stats["lost"] if coord else 0,
        preempted=coord.holdings.stats["preempted"] if coord else 0,
        waiting=handle.waiting,
        writes=coord.writes if coord else 0,
        conflicts=coord.conflicts if coord else 0,
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


def _spec(permits: object, burst: object, burst_seconds: object) -> dict[str, int]:
    return {
        "permits": check_int(permits, "permits", 1, state.PERMITS_MAX),
        "burst": check_int(burst, "burst", 0, state.PERMITS_MAX),
        "burstSeconds": check_int(burst_seconds, "burst_seconds", 1, state.BURST_SECONDS_MAX),
    }


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
        ttl: seconds of the session a grant lives with: if this process stops renewing its
            session (it died, froze, lost the network) for that long, its grants are reaped.
            0: held until released or the pod ends (only in a pod).

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
        spec = _spec(permits if permits is not None else 1, burst, burst_seconds)
        self._permits = spec["permits"] if permits is not None else None
        self._object = SemaphoreObject(
            state.SEMAPHORE_KIND,
            name,
            namespace=namespace,
            client=client,
            ttl=check_ttl(ttl, allow_zero=True),
            create_spec=spec if permits is not None else None,
        )
        self._stack = TaskStack()

    def __repr__(self) -> str:
        permits = self._permits if self._permits is not None else "(existing)"
        return f"<Semaphore {self._object.namespace or '(default)'}/{self.name} permits={permits}>"

    @property
    def name(self) -> str:
        return self._object.name

    @property
    def namespace(self) -> str | None:
        """The namespace, once known (given, or learnt from the client on first use)."""
        return self._object.namespace or None

    async def __aenter__(self) -> Permit:
        return await self._stack.enter(self.hold())

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._stack.exit(*exc_info)

    def _kwargs(
        self, weight: int, priority: int, preemptible: bool, ttl: int | None, burst: bool
    ) -> dict[str, Any]:
        """The engine's arguments for one acquisition (validated: no I/O if bad)."""
        weight = check_int(weight, "weight", 1, 2 * state.PERMITS_MAX)
        self._object.check_args(priority, ttl)
        return {
            "fields": {"weight": weight},
            "priority": priority,
            "preemptible": bool(preemptible),
            "ttl": ttl,
            "allow_burst": bool(burst),
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
        """``async with sem.hold(...) as permit``: acquire, hold, release.

        If the permit ends while held (its session ended, it was force-released or
        reaped, the object was deleted) or a higher-priority waiter preempts it, the body
        is cancelled and :class:`~konductor_sdk.PermitLost` is raised on exit.

        Args:
            weight: units to take, 1..limit (adjacent slots).
            priority: higher is served first, in [-1000000, 1000000].
            preemptible: a waiter of higher priority may ask this holder to yield.
            ttl: the session TTL for this acquisition (default: the semaphore's).
            burst: accept a burst grant (``spec.burst`` units beyond the limit, lasting
                at most ``min(ttl, spec.burstSeconds)``) when the limit is full.

        Raises:
            ConfigurationError: bad arguments, or a weight that can never fit.
        """
        return self._object.hold(
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
        """Wait for ``weight`` units; held until :meth:`Permit.release` (or until the
        session ends: loss is reported on ``permit.lost``/``wait_lost()``).

        Arguments as for :meth:`hold`. Cancelling the call leaves the queue, and releases
        a permit granted just before the cancellation.

        Raises:
            ConfigurationError: bad arguments, or a weight that can never fit.
            NotFoundError: the object does not exist (and ``permits`` was not given), or
                was deleted while waiting.
        """
        # No local: a parked waiter's frame need not keep the arguments' dict.
        return await self._object.acquire(
            **self._kwargs(weight, priority, preemptible, ttl, burst), nowait=False
        )

    async def acquire_nowait(
        self,
        *,
        weight: int = 1,
        priority: int = 0,
        preemptible: bool = False,
        ttl: int | None = None,
        burst: bool = False,
    ) -> Permit:
        """Like :meth:`acquire`, but only if the grant can be made at once (nothing is
        written otherwise).

        Raises:
            WouldBlock: not enough free units, or others are queued.
        """
        kwargs = self._kwargs(weight, priority, preemptible, ttl, burst)
        return await self._object.acquire(**kwargs, nowait=True)

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
        base = self._object.create_spec or {}
        permits = permits if permits is not None else base.get("permits")
        if permits is None:
            raise ConfigurationError("permits is required to create a Semaphore")
        spec = _spec(
            permits,
            burst if burst is not None else base.get("burst", 0),
            burst_seconds
            if burst_seconds is not None
            else base.get("burstSeconds", state.BURST_SECONDS_DEFAULT),
        )
        return status_of(self._object, await self._object.create(spec), [])

    async def delete(self) -> None:
        """Delete the object; every holder's permit is lost, every waiter fails."""
        await self._object.delete()

    async def status(self) -> SemaphoreStatus:
        """A fresh snapshot from the server (the object and its queue)."""
        return await read_status(self._object)

    async def set_permits(
        self, permits: int, *, burst: int | None = None, burst_seconds: int | None = None
    ) -> SemaphoreStatus:
        """Change ``spec.permits`` (and optionally the burst settings).

        Waiters that now fit see the change on their watch and are granted at once.
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
        obj = await self._object.patch_spec(spec)
        return status_of(self._object, obj, await self._object.claims())

    async def force_release(self, who: str) -> tuple[str, ...]:
        """Remove grants by key (``slot#token``), first slot, holder id or session name
        (admin/CLI); returns the removed keys.

        The affected holders see their permits lost (their ``async with`` body is
        cancelled). Removing another user's grant needs the ``override`` verb. The
        operator does the same automatically when a holder's session ends.
        """
        return await self._object.force_release(who)

    def changes(self) -> AsyncIterator[SemaphoreStatus]:
        """``async for status in sem.changes():`` the status now and after every change
        (grants, releases, queueing), from the client's shared watches; a consumer that is
        busy sees the latest state, not every intermediate one.

        Raises:
            NotFoundError: the object does not exist, or was deleted.
            APIError: a watch failed (``ForbiddenError``, ``UnreachableError``).
        """
        return changes_of(self._object)

    def statistics(self) -> SemaphoreStatistics:
        """Counters of this process's use of the object (no I/O)."""
        return statistics_of(self._object)

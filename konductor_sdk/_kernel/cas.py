"""Optimistic concurrency: read, compute, write with the resourceVersion, retry on 409.

Every state change a primitive makes (acquire, enqueue, arrive, take over a lease) goes
through :func:`update_status`: the mutation is a pure function of the object as read, the
write is a status PUT carrying that object's resourceVersion, and the API server rejects
it with 409 if anyone wrote in between. Nothing is ever decided on stale state.

The first read comes from the shared watch cache when one is synced (no round trip). A 409
means the server holds a newer version than the one we wrote on; the retry waits for the
shared watch to deliver it (it is on its way to every client anyway), then sleeps a
full-jitter back-off so that the writers who lost to the same write do not all retry in
the same instant, and recomputes on the newest version cached by then. Only without a
synced watch, or when the watch has not delivered a newer version within
:data:`WATCH_WAIT_SECONDS`, is the object re-read with a GET. Retries are bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import (
    AlreadyExistsError,
    ConflictError,
    ConflictExhausted,
    NotFoundError,
)
from konductor_sdk._kernel.objects import KObject, ResourceKind
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.store import Store
from konductor_sdk._kernel.watch import rv_int

Mutation = Callable[[KObject], Mapping[str, Any] | None]

DEFAULT_MAX_ATTEMPTS = 64
WATCH_WAIT_SECONDS = 0.25
"""Longest a retry waits for the watch to deliver the write that beat it before a GET."""
JITTER_BASE = 0.005
JITTER_CAP = 1.0
"""Full-jitter back-off before a retry (``backoff(attempt, JITTER_BASE, JITTER_CAP)``).
The cap is only reached after 8 lost races in a row, i.e. under heavy contention, where
spreading the retries wider costs fewer 409s (each nearly as dear to the API server as a
successful write) than it costs in latency (docs/performance.md, "2. Contention")."""


@attrs.frozen
class CasResult:
    """What :func:`update_status` did: the object after it, and how many writes it took."""

    object: KObject
    attempts: int
    wrote: bool
    sent: float | None = None
    """``client.clock.monotonic()`` when the successful write was sent (``None``: no write).
    An entry written by it was visible to nobody before then: renewal deadlines count from
    here, not from the start of a CAS loop that may have lost many races first."""


async def read(
    client: Client, kind: ResourceKind, namespace: str, name: str, *, fresh: bool = False
) -> KObject:
    """The object from the watch cache if synced (and not ``fresh``), else a GET."""
    if not fresh:
        watch = client.cached_watch(kind, namespace)
        if watch is not None:
            obj = watch.get(name, namespace)
            if obj is not None:
                return obj
    return await client.store.get(kind, namespace, name)


async def _newer_than(
    client: Client, kind: ResourceKind, namespace: str, name: str, stale: KObject, attempt: int
) -> KObject:
    """The object after a write on ``stale`` got a 409: from the watch once it has delivered
    a newer version (then after a jittered pause), else from a GET."""
    watch = client.cached_watch(kind, namespace)
    stale_rv = rv_int(stale.resource_version)
    if watch is not None and stale_rv >= 0:
        delivered = False
        with anyio.move_on_after(WATCH_WAIT_SECONDS):
            while True:
                changed = watch.next_change(name, namespace)  # before reading the cache
                cached = watch.get(name, namespace)
                if cached is None:
                    break  # deleted, or never cached: let the GET tell
                if rv_int(cached.resource_version) > stale_rv:
                    delivered = True
                    break
                await changed.wait()
        if delivered:
            await anyio.sleep(backoff(attempt, base=JITTER_BASE, cap=JITTER_CAP))
            cached = watch.get(name, namespace)  # the newest by now, never older
            if cached is not None and rv_int(cached.resource_version) > stale_rv:
                return cached
    else:
        await anyio.sleep(backoff(attempt, base=JITTER_BASE, cap=JITTER_CAP))
    return await client.store.get(kind, namespace, name)


async def update_status(
    client: Client,
    kind: ResourceKind,
    namespace: str,
    name: str,
    mutate: Mutation,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    current: KObject | None = None,
) -> CasResult:
    """Apply ``mutate`` to the object's status with compare-and-swap.

    Args:
        mutate: gets the object as read, returns the complete new status, or ``None`` when
            no write is needed. It may raise (e.g. ``WouldBlock``) to abort; it is called
            again on every retry, so it must be pure.
        current: an object the caller already holds, used for the first attempt.

    Raises:
        ConflictExhausted: ``max_attempts`` writes all lost the race.
        NotFoundError: the object does not exist.
    """
    obj = current if current is not None else await read(client, kind, namespace, name)
    for attempt in range(1, max_attempts + 1):
        new_status = mutate(obj)
        if new_status is None:
            return CasResult(obj, attempt - 1, wrote=False)
        sent = client.clock.monotonic()
        try:
            written = await client.store.replace(
                kind, obj.with_status(new_status), subresource="status"
            )
        except ConflictError:
            if attempt == max_attempts:
                break
            obj = await _newer_than(client, kind, namespace, name, obj, attempt)
            continue
        watch = client.cached_watch(kind, namespace)
        if watch is not None:
            watch.observe(written)
        return CasResult(written, attempt, wrote=True, sent=sent)
    raise ConflictExhausted(
        f"{kind.kind} {namespace}/{name}: gave up after {max_attempts} conflicting writes",
        attempts=max_attempts,
        resource_version=obj.resource_version,
    )


async def ensure_exists(
    client: Client,
    kind: ResourceKind,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
) -> KObject:
    """Create the object with ``spec`` unless it exists; return it either way.

    An existing object keeps its own spec: whoever created it first decides (the caller
    compares and warns or raises if it cares).
    """
    try:
        return await read(client, kind, namespace, name)
    except NotFoundError:
        pass
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    try:
        return await client.store.create(
            kind, namespace, {"metadata": metadata, "spec": dict(spec)}
        )
    except AlreadyExistsError:
        return await client.store.get(kind, namespace, name)


async def json_patch_status(
    store: Store,
    kind: ResourceKind,
    namespace: str,
    name: str,
    ops: Sequence[Mapping[str, Any]],
) -> KObject:
    """Apply the JSON patch ``ops`` to the status of ``name``: the server applies it to its
    latest version, so its ``test`` operations are the conditions of the write (a failed
    one is :class:`InvalidObjectError`, 422), and nothing else is compared."""
    return await store.patch(
        kind, namespace, name, list(ops), patch_type="json", subresource="status"
    )

"""Adapters from :class:`~._holds.HoldSpec` to the SDK primitives' ``async with`` forms.

Each yields a dict of what was granted (``key``, ``token``...). The SDK does the hard
parts: waiting on the shared watch, leaving the queue and releasing a late grant when
cancelled, renewing while held, cancelling the body and raising ``PermitLost`` /
``LeadershipLost`` when ownership is lost, releasing on exit.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from konductor_sdk import Client

    from ._holds import HoldSpec


@contextlib.asynccontextmanager
async def hold(
    client: Client, spec: HoldSpec, *, ttl: int, priority: int, quiet: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """Acquire or wait for ``spec`` for the duration of the body (``quiet``: no progress
    line while waiting, see :mod:`._progress`)."""
    from . import _progress

    await client.connect()
    ns = spec.namespace or client.namespace
    if spec.kind == "lease":
        from konductor_sdk._kernel.objects import LEASE
        from konductor_sdk.lease import Lease

        lease = Lease(
            spec.name, ttl=ttl, namespace=spec.namespace, client=client, priority=priority
        )
        async with contextlib.AsyncExitStack() as stack:
            async with _progress.object_progress(
                client, LEASE, ns, spec.name, _progress.lease_line, spec.describe(), quiet=quiet
            ):
                held = await stack.enter_async_context(lease)
            yield {"key": held.key, "token": held.token}
    elif spec.kind == "barrier":
        from konductor_sdk._kernel.objects import BARRIER
        from konductor_sdk.barrier import Barrier

        barrier = Barrier(
            spec.name, expected=spec.expected, namespace=spec.namespace, client=client, ttl=ttl
        )
        async with _progress.object_progress(
            client, BARRIER, ns, spec.name, _progress.barrier_line, spec.describe(), quiet=quiet
        ):
            index = await barrier.wait()
        yield {"index": index}
    elif spec.kind in ("semaphore", "mutex", "rwmutex"):
        async with _semaphore_family(
            client, spec, ttl=ttl, priority=priority, quiet=quiet
        ) as granted:
            yield granted
    elif spec.kind == "gate":
        from konductor_sdk._kernel.objects import GATE
        from konductor_sdk.gate import Gate

        async with _progress.object_progress(
            client, GATE, ns, spec.name, _progress.gate_line, spec.describe(), quiet=quiet
        ):
            await Gate(spec.name, namespace=spec.namespace, client=client).wait()
        yield {}
    else:  # pragma: no cover - HoldSpec.kind is a closed Literal
        raise AssertionError(spec.kind)


_FACADES = {
    "lease": "konductor_sdk.lease",
    "barrier": "konductor_sdk.barrier",
    "gate": "konductor_sdk.gate",
    "semaphore": "konductor_sdk.semaphore",
    "mutex": "konductor_sdk.mutex",
    "rwmutex": "konductor_sdk.rwmutex",
}


def preload(kinds: Iterable[str]) -> None:
    """Import the SDK modules ``kinds`` need now, so that a ``--timeout`` started after this
    bounds waiting on the cluster, not importing on a slow machine."""
    for kind in set(kinds):
        importlib.import_module(_FACADES[kind])


def front(client: Client, kind: str, name: str, namespace: str | None = None, **kw: Any) -> Any:
    """The SDK object of the semaphore family for ``kind`` (constructor validates)."""
    if kind == "semaphore":
        from konductor_sdk.semaphore import Semaphore

        return Semaphore(name, namespace=namespace, client=client, **kw)
    if kind == "mutex":
        from konductor_sdk.mutex import Mutex

        return Mutex(name, namespace=namespace, client=client, **kw)
    if kind == "rwmutex":
        from konductor_sdk.rwmutex import RWMutex

        return RWMutex(name, namespace=namespace, client=client, **kw)
    raise AssertionError(kind)  # pragma: no cover


def grant_info(permit: Any, obj: Any, kind: str, client: Client) -> dict[str, Any]:
    """What a detached acquisition prints (and ``koncli release -f`` reads back)."""
    pod = client.identity.pod
    return {
        "kind": kind,
        "namespace": obj.namespace,
        "name": obj.name,
        "key": permit.key,
        "token": permit.token,
        "weight": permit.weight,
        "mode": permit.mode,
        "holder": client.identity.holder,
        "pod": pod.to_dict() if pod is not None else None,
        "ttlSeconds": permit.ttl_seconds,
    }


@contextlib.asynccontextmanager
async def _semaphore_family(
    client: Client, spec: HoldSpec, *, ttl: int, priority: int, quiet: bool
) -> AsyncIterator[dict[str, Any]]:
    from ._progress import queue_progress

    obj = front(client, spec.kind, spec.name, spec.namespace, ttl=ttl)
    if spec.kind == "semaphore":
        cm = obj.hold(weight=spec.weight, priority=priority)
    elif spec.kind == "mutex":
        cm = obj.hold(priority=priority)
    else:
        cm = obj.read(priority=priority) if spec.mode == "read" else obj.write(priority=priority)
    async with contextlib.AsyncExitStack() as stack:
        async with queue_progress(client, obj, spec.describe(), quiet=quiet):
            permit = await stack.enter_async_context(cm)
        yield {"key": permit.key, "token": permit.token}


async def force_release(
    client: Client, kind: str, namespace: str, name: str, who: str
) -> tuple[str, ...]:
    """Remove the entries of ``who`` (acquisition key or holder id); the removed keys."""
    if kind in ("semaphore", "mutex", "rwmutex"):
        removed: tuple[str, ...] = await front(client, kind, name, namespace).force_release(who)
        return removed
    if kind == "lease":
        from konductor_sdk._kernel.cas import update_status
        from konductor_sdk._kernel.claims import delete_claim, target_selector
        from konductor_sdk._kernel.objects import CLAIM, LEASE
        from konductor_sdk._machines import lease as _lease_state

        found: list[str] = []

        def mutate(obj: Any) -> Any:
            entries = obj.status.get("holders") or {}
            found[:] = [k for k, e in entries.items() if who in (k, e.get("holder"))]
            return _lease_state.forget(obj.spec, obj.status, keys=set(found))

        result = await update_status(client, LEASE, namespace, name, mutate)
        removed_keys = list(found) if result.wrote else []
        # Candidates are claims (docs/design.md): withdrawing one deletes its claim.
        claims = await client.store.list(
            CLAIM, namespace, field_selector=target_selector(LEASE, name)
        )
        for claim in claims.items:
            if who in (claim.name, claim.spec.get("holder")):
                await delete_claim(client, claim)
                removed_keys.append(claim.name)
        return tuple(removed_keys)
    from konductor_sdk._kernel.errors import ConfigurationError

    raise ConfigurationError(f"{kind} has no holders to release (semaphore, mutex, rwmutex, lease)")


@contextlib.asynccontextmanager
async def open_hold(
    client: Client, spec: HoldSpec, *, ttl: int, priority: int, quiet: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """Acquire (or wait for) ``spec`` and hold it for the body; yields what was granted."""
    info: dict[str, Any] = {"kind": spec.kind, "namespace": spec.namespace, "name": spec.name}
    async with hold(client, spec, ttl=ttl, priority=priority, quiet=quiet) as granted:
        info.update(granted)
        info["namespace"] = info["namespace"] or client.namespace
        yield info

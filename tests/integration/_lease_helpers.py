"""Shared helpers of the lease and election tests: wait on watches (no polling), and an
independent observer of every stored version of a Lease."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from konductor_sdk import Client, NotFoundError
from konductor_sdk._kernel.claims import claim_queue
from konductor_sdk._kernel.objects import LEASE, KObject

Predicate = Callable[[KObject], bool]


async def wait_for(client: Client, name: str, predicate: Predicate) -> KObject:
    """Wait (on the shared watch) until the lease object satisfies ``predicate``."""
    watch = await client.watch(LEASE, client.namespace)
    with anyio.fail_after(30):
        while True:
            changed = watch.next_change(name)
            obj = watch.get(name)
            if obj is not None and predicate(obj):
                return obj
            await changed.wait()


async def wait_for_candidates(
    client: Client, name: str, predicate: Callable[[list[str]], bool]
) -> list[str]:
    """Wait until the holders of the lease's claims, in service order, satisfy
    ``predicate``; returns them."""
    async with claim_queue(client, LEASE, name) as queue:
        with anyio.fail_after(30):
            while True:
                changed = queue.next_change()
                holders = [str(c.spec.get("holder")) for c in queue.ordered()]
                if predicate(holders):
                    return holders
                await changed.wait()


def has_candidate(holder: str) -> Callable[[list[str]], bool]:
    return lambda holders: holder in holders


def holder_is(holder: str) -> Predicate:
    return lambda o: o.status.get("holder") == holder


@attrs.define
class History:
    """Every version of one Lease as a raw watch delivered it, checked as it comes."""

    versions: list[dict[str, Any]] = attrs.Factory(list)
    grants: list[tuple[str, int]] = attrs.Factory(list)
    violations: list[str] = attrs.Factory(list)
    changed: anyio.Event = attrs.Factory(anyio.Event)

    def add(self, status: dict[str, Any]) -> None:
        holders = status.get("holders") or {}
        token = int(status.get("fencingToken", 0))
        previous = self.versions[-1] if self.versions else {}
        before = int(previous.get("fencingToken", 0))
        if len(holders) > 1:
            self.violations.append(f"{len(holders)} holders: {holders}")
        if token < before:
            self.violations.append(f"fencingToken went down {before} -> {token}")
        old_keys = set(previous.get("holders") or {})
        for key, entry in holders.items():
            if key in old_keys:
                continue
            if entry["token"] != before + 1 or token != before + 1:
                self.violations.append(f"grant {key} took {entry['token']} after {before}")
            self.grants.append((str(entry["holder"]), int(entry["token"])))
        self.versions.append(status)
        self.changed.set()
        self.changed = anyio.Event()


@asynccontextmanager
async def observed(client: Client, name: str) -> AsyncIterator[History]:
    """Record every version of lease ``name`` (a raw watch of the store, not the SDK's
    watch cache) while inside the block; checks on the way (see :class:`History`)."""
    history = History()
    await client.connect()
    ns = client.namespace
    store = client.store
    listed = await store.list(LEASE, ns)
    for obj in listed.items:
        if obj.name == name:
            history.add(dict(obj.status))
    started = anyio.Event()

    async def follow() -> None:
        rv = listed.resource_version
        started.set()
        while True:
            async for event in store.watch(LEASE, ns, resource_version=rv):
                rv = event.object.resource_version
                if event.type in ("ADDED", "MODIFIED") and event.object.name == name:
                    history.add(dict(event.object.status))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await started.wait()
        try:
            yield history
        finally:
            # Let the last versions arrive: the newest one is on the server already.
            latest = None
            with contextlib.suppress(NotFoundError):  # deleted: nothing more to wait for
                latest = await store.get(LEASE, ns, name)
            if latest is not None:
                with anyio.move_on_after(10):
                    while not history.versions or history.versions[-1] != dict(latest.status):
                        await history.changed.wait()
            tg.cancel_scope.cancel()

"""Small helpers for waiters on the shared watch (see :mod:`konductor_sdk._kernel.watch`)."""

from __future__ import annotations

import anyio

from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.watch import rv_int


def newest(*objects: KObject | None) -> KObject | None:
    """The most recent of several views of one object (the watch cache, a CAS result, a
    fresh GET), by resourceVersion; ``None`` if all are ``None``."""
    best: KObject | None = None
    for obj in objects:
        if obj is not None and (
            best is None or rv_int(obj.resource_version) > rv_int(best.resource_version)
        ):
            best = obj
    return best


def caught_up(cached: KObject | None, latest: KObject | None) -> KObject | None:
    """``latest`` while the watch cache is still older than it, then ``None``: a view this
    process got from its own write or a fresh read is used only until the shared watch has
    caught up (after that the cache alone also shows deletions)."""
    if cached is None or latest is None:
        return latest
    caught = rv_int(cached.resource_version) >= rv_int(latest.resource_version)
    return None if caught else latest


async def wait_any(*events: anyio.Event, delay: float | None = None) -> None:
    """Return when any of ``events`` is set, or after ``delay`` seconds (``None``: never)."""
    if any(event.is_set() for event in events):
        return
    with anyio.move_on_after(delay):
        async with anyio.create_task_group() as tg:

            async def one(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            for event in events:
                tg.start_soon(one, event)

"""This client's grants on one object: judged on every version of it, released in batches.

:class:`Holdings` watches what the object says about each permit of this client (through
the coordinator's listener on the shared watch): a grant gone from the object is lost, a
preemption request naming its token is signalled, and an explicit holder that ignores it
is bounded in time. Releases asked for while one is in flight go in one JSON patch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, final

import anyio
import anyio.lowlevel
import attrs

from konductor_sdk._engines.permit import CLEANUP_SECONDS, Permit
from konductor_sdk._engines.semaphore_waiter import Granted, spawn_quietly
from konductor_sdk._kernel.batching import Batcher
from konductor_sdk._kernel.cas import json_patch_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import APIError, InvalidObjectError, NotFoundError
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.sessions import safety_margin
from konductor_sdk._kernel.watch import KindWatch, rv_int
from konductor_sdk._machines import semaphore_plan as planning
from konductor_sdk._machines.semaphore import LockKind, grants

log = logging.getLogger("konductor_sdk.semaphore")


@attrs.define(eq=False)
class _Release:
    """One grant to remove, in the next release patch."""

    slot: int
    token: int
    done: anyio.Event = attrs.field(factory=anyio.Event)
    error: BaseException | None = None
    cancelled: bool = False
    """Never set: a release is not withdrawn once asked for."""


@final
class Holdings:
    """The permits of one client on one object (see the module docstring)."""

    def __init__(self, client: Client, kind: LockKind, namespace: str, name: str) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.permits: dict[int, Permit] = {}
        self.stats: dict[str, int] = dict.fromkeys(("lost", "preempted"), 0)
        self.watch: KindWatch | None = None
        """The shared watch of the kind, once the coordinator started it."""
        self._releases = Batcher[_Release](client, self._flush_releases)

    def __repr__(self) -> str:
        return f"<Holdings {self.kind.kind.kind} {self.namespace}/{self.name} {len(self.permits)}>"

    def adopt(self, permit: Permit) -> None:
        """Judge ``permit`` on every new version of the object until it is released
        (starting with the one cached now: the watch may have moved on since the grant)."""
        self.permits[permit.token] = permit
        obj = self.watch.get(self.name, self.namespace) if self.watch is not None else None
        if obj is not None:
            self.on_object("MODIFIED", obj)

    def forget(self, permit: Permit) -> None:
        if self.permits.get(permit.token) is permit:
            del self.permits[permit.token]

    def session_lost(self, session: str, reason: str) -> None:
        """Every permit of ``session`` is lost; give them back (in the background)."""
        for permit in list(self.permits.values()):
            if permit.session == session:
                permit.mark_lost(f"its session ended: {reason}")
                self.stats["lost"] += 1
                spawn_quietly(self.client, permit.release)

    def watch_failed(self, reason: str) -> None:
        """The shared watch failed: a removal or a takeover could no longer be seen, so no
        permit can be trusted any more; give them back (in the background)."""
        for permit in list(self.permits.values()):
            self._end(permit, reason)
            spawn_quietly(self.client, permit.release)

    def on_object(self, etype: str, obj: KObject) -> None:
        """Judge every permit on a new version of the object (or its deletion)."""
        if not self.permits:
            return
        if etype == "DELETED":
            for permit in list(self.permits.values()):
                self._end(permit, "the object was deleted")
            return
        holders = obj.status.get("holders")
        holders = holders if isinstance(holders, Mapping) else {}
        requests = obj.status.get("preemptRequests")
        requests = requests if isinstance(requests, Mapping) else {}
        rv = rv_int(obj.resource_version)
        for token, permit in list(self.permits.items()):
            entry = holders.get(str(permit.slot))
            if not isinstance(entry, Mapping) or entry.get("token") != token:
                if rv >= permit.granted_rv:
                    self._end(
                        permit,
                        "the grant was removed (its session was reaped, or it was force-released)",
                    )
            elif str(token) in requests and not permit.preempt_requested.is_set():
                self.stats["preempted"] += 1
                permit.mark_preempted()
                self._yielding(permit, entry)

    def _end(self, permit: Permit, reason: str) -> None:
        self.forget(permit)
        if not permit.released:
            self.stats["lost"] += 1
            permit.mark_lost(reason)
            permit.done()

    def _yielding(self, permit: Permit, entry: Mapping[str, Any]) -> None:
        """A holder asked to yield: unless its ``async with`` releases at once, bound it in
        time (one session TTL from now, server-visible so the operator reaps it too)."""
        if permit.released or permit.ttl_seconds <= 0 or "ttlSeconds" in entry:
            return
        spawn_quietly(self.client, self._bound, permit)

    async def _bound(self, permit: Permit) -> None:
        await anyio.lowlevel.checkpoint()  # an ``async with`` body releases first
        if permit.released:
            return
        ttl = permit.ttl_seconds
        sent = self.client.clock.monotonic()
        try:
            await json_patch_status(
                self.client.store,
                self.kind.kind,
                self.namespace,
                self.name,
                planning.deadline_patch(permit.slot, permit.token, ttl),
            )
        except APIError as exc:
            log.debug("%r: could not mark the grant as yielding: %s", permit, exc)
            return  # gone already, or released meanwhile
        permit.set_deadline(sent + ttl - safety_margin(ttl))
        await expire_at(self.client, permit)

    async def give_back(self, granted: Granted) -> None:
        """Remove a grant nobody will use (shielded, bounded)."""
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True), contextlib.suppress(APIError):
            await self.release(granted.slot, granted.token)

    async def release(self, slot: int, token: int) -> None:
        """Remove the grant ``token`` at ``slot``: one JSON patch for every release of this
        client on the object asked for while the previous one was in flight (releases test
        only their own token, so they never conflict with anything but each other's
        absence). Already gone (reaped, force-released, object deleted) is fine.

        Raises:
            APIError: the server could not be told.
        """
        request = _Release(slot, token)
        try:
            self._releases.submit(request)
        except RuntimeError:
            await self._flush_releases([request])  # the client is closing: directly
        else:
            await request.done.wait()
        if request.error is not None:
            raise request.error

    async def _flush_releases(self, batch: list[_Release]) -> None:
        todo = list(batch)
        try:
            for _ in range(4):
                ops = [op for r in todo for op in planning.release_patch(r.slot, r.token)]
                try:
                    written = await json_patch_status(
                        self.client.store, self.kind.kind, self.namespace, self.name, ops
                    )
                except InvalidObjectError:
                    # One of them is gone already: keep those the object still has.
                    obj = await self.client.store.get(self.kind.kind, self.namespace, self.name)
                    present = {(g.slot, g.token) for g in grants(obj.status)}
                    todo = [r for r in todo if (r.slot, r.token) in present]
                    if not todo:
                        return
                    continue
                if self.watch is not None:
                    self.watch.observe(written)
                return
            raise APIError(f"{self!r}: releases kept failing their tests")
        except NotFoundError:
            return  # the object is gone, and the grants with it
        except APIError as exc:
            for request in todo:
                request.error = exc
        except BaseException:
            for request in todo:
                request.error = RuntimeError("the client was closed during the release")
            raise
        finally:
            for request in batch:
                request.done.set()


async def expire_at(client: Client, permit: Permit) -> None:
    """Mark ``permit`` lost at its own deadline (burst, yielding) and give it back."""
    clock = client.clock
    while not permit.released:
        deadline = permit.deadline
        if deadline is None:
            return
        left = deadline - clock.monotonic()
        if left <= 0:
            break
        # In slices: the clock may be a test's FakeClock that jumps.
        await anyio.sleep(min(left, 0.5))
    if not permit.released:
        permit.lost  # noqa: B018 - marks it lost at the deadline, with the reason
        await permit.release()

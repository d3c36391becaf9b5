"""Entries with a time to live: holders, waiters, arrivals.

Every entry a client writes into a primitive's status carries the same owner fields::

    holder: "<pod>:<uid>" or "<host>:<pid>:<rand>"
    pod: {name, namespace, uid}        # optional; lets the operator reap by pod lifecycle
    ttlSeconds: 30                     # how long it may go without a renewal
    renewCount: 7                      # bumped by every renewal; what observers watch
    acquiredAt / renewedAt             # wall time, for humans only

**Expiry is judged by the observer**: an entry is expired when its ``renewCount`` has not
changed for ``ttlSeconds`` on the *observer's* monotonic clock, counted from when the
observer first saw the current value. The owner, in turn, counts its own deadline from
when it *sent* its last successful renewal, minus a safety margin. The renewal was sent
before any observer could see it, so the owner always gives up before any observer can
call the entry expired — whatever the wall clocks say (client-go's leader election makes
the same argument).

Renewals are JSON patches without a resourceVersion: they ``test`` that the entry is still
ours (holder and token) and bump ``renewCount``. They cannot conflict semantically with
anyone else's write, so the server may apply them on top of whatever is current; if the
entry was reaped or replaced, the ``test`` fails and the owner learns it lost.

Renewals of one object by one client that fall due together go in **one** patch (every
entry's ``test`` ops, then its bumps): 256 barrier parties of a process, or 1,000 queued
waiters, renew with one write per round instead of one each. Entries written together
(one combined arrival, one group commit) share their send time and so their schedule.
If a combined patch fails its ``test`` (one of the entries is gone), each entry is renewed
on its own to learn which.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, final

import anyio
import attrs

from konductor_sdk._kernel.batching import Batcher, PerClient
from konductor_sdk._kernel.cas import json_patch_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import Clock, rfc3339
from konductor_sdk._kernel.errors import APIError, InvalidObjectError, NotFoundError
from konductor_sdk._kernel.objects import KObject, ResourceKind, json_pointer
from konductor_sdk._kernel.retry import backoff

MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 86_400


def safety_margin(ttl: float) -> float:
    """How much earlier than ``ttl`` an owner gives up: 10%, at least 0.2 s, at most 5 s."""
    return min(max(ttl * 0.1, 0.2), 5.0)


def new_entry(client: Client, ttl_seconds: int, **fields: Any) -> dict[str, Any]:
    """A fresh entry for this process with the common owner fields and ``fields``."""
    now = rfc3339(client.clock.now())
    return {
        **client.identity.entry_fields(),
        "ttlSeconds": int(ttl_seconds),
        "renewCount": 0,
        "acquiredAt": now,
        "renewedAt": now,
        **fields,
    }


@final
class ExpiryTracker:
    """Judges expiry of entries by when *this observer* last saw them change."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._seen: dict[Hashable, tuple[Hashable, float, float]] = {}

    def observe(self, key: Hashable, marker: Hashable, ttl_seconds: float) -> None:
        """Record the entry's current ``marker`` (e.g. its renewCount); restarts its clock
        only when the marker changed."""
        old = self._seen.get(key)
        if old is None or old[0] != marker:
            self._seen[key] = (marker, self._clock.monotonic(), float(ttl_seconds))
        elif old[2] != ttl_seconds:
            self._seen[key] = (marker, old[1], float(ttl_seconds))

    def expires_at(self, key: Hashable) -> float | None:
        """Monotonic time at which the entry expires; ``None`` if never observed."""
        seen = self._seen.get(key)
        return None if seen is None else seen[1] + seen[2]

    def expired(self, key: Hashable) -> bool:
        at = self.expires_at(key)
        return at is not None and self._clock.monotonic() >= at

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget every entry not in ``keys`` (they are gone from the object)."""
        keep = set(keys)
        for key in [k for k in self._seen if k not in keep]:
            del self._seen[key]

    def forget(self, key: Hashable) -> None:
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)


class EntryGone(Exception):
    """The entry being renewed is no longer ours (reaped, released, replaced)."""


@final
@attrs.define
class Renewal:
    """Keeps one entry alive.

    ``path`` is the JSON pointer parts of the entry under the object, e.g.
    ``("status", "holders", key)``. ``expect`` are fields the entry must still have for
    the renewal to apply (e.g. ``{"holder": ..., "token": 17}``).
    """

    client: Client
    kind: ResourceKind
    namespace: str
    name: str
    path: tuple[str, ...]
    expect: Mapping[str, Any]
    ttl_seconds: float
    last_ok_sent: float
    """Monotonic time the last successful write (grant or renewal) was *sent*."""
    renew_count: int = 0

    @property
    def deadline(self) -> float:
        """Monotonic time after which the owner must consider the entry lost."""
        return self.last_ok_sent + self.ttl_seconds - safety_margin(self.ttl_seconds)

    def ops(self) -> list[dict[str, Any]]:
        ptr = json_pointer(*self.path)
        now = self.client.clock.now()
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"{ptr}/{field}", "value": value}
            for field, value in self.expect.items()
        ]
        ops += [
            {"op": "replace", "path": f"{ptr}/renewCount", "value": self.renew_count + 1},
            {"op": "replace", "path": f"{ptr}/renewedAt", "value": rfc3339(now)},
        ]
        return ops

    async def renew_once(self) -> None:
        """One renewal. Raises :class:`EntryGone` if the entry is no longer ours."""
        try:
            sent, obj = await _combiner(self).renew(self)
        except (NotFoundError, InvalidObjectError) as exc:
            # A failed JSON-patch "test" (or a missing path) comes back as 422, a deleted
            # object as 404: the entry is not ours. A 409 is not among them: the server can
            # answer it when its own retries of a contended patch run out, and that is a
            # transient failure to retry before the deadline, not a loss.
            raise EntryGone(str(exc)) from exc
        self.renew_count += 1
        self.last_ok_sent = sent
        watch = self.client.cached_watch(self.kind, self.namespace)
        if watch is not None:
            watch.observe(obj)

    async def run(self, on_lost: Callable[[str], None], *, interval: float | None = None) -> None:
        """Renew every ``ttl/3`` until cancelled; call ``on_lost(reason)`` and return if the
        entry is gone or the deadline passes without a successful renewal."""
        every = interval if interval is not None else max(self.ttl_seconds / 3.0, 0.05)
        failures = 0
        while True:
            now = self.client.clock.monotonic()
            # Due ``every`` after the last successful send, not after this task last ran:
            # entries renewed in one patch stay due together (see _Combiner).
            due = self.last_ok_sent + every - now
            wait = due if failures == 0 else backoff(failures, base=0.1, cap=every)
            await anyio.sleep(max(0.0, min(wait, self.deadline - now)))
            remaining = self.deadline - self.client.clock.monotonic()
            if remaining <= 0:
                on_lost(f"could not renew within {self.ttl_seconds:g}s (ttlSeconds)")
                return
            try:
                with anyio.fail_after(remaining):
                    await self.renew_once()
                failures = 0
            except EntryGone as exc:
                on_lost(f"entry is gone ({exc})")
                return
            except (APIError, TimeoutError):
                failures += 1


@attrs.define(eq=False)
class _Request:
    renewal: Renewal
    done: anyio.Event = attrs.Factory(anyio.Event)
    cancelled: bool = False
    sent: float = 0.0
    object: KObject | None = None
    error: BaseException | None = None


@final
class _Combiner:
    """Sends the renewals of one object by one client that are pending together as one
    JSON patch; renewals asked for while a patch is in flight go in the next one."""

    def __init__(self, client: Client, key: tuple[str, str, str]) -> None:
        self._client = client
        self._key = key
        self._batcher = Batcher[_Request](client, self._flush, idle=self._forget)

    async def renew(self, renewal: Renewal) -> tuple[float, KObject]:
        """Renew ``renewal``'s entry; when the patch carrying it was sent, and the result."""
        request = _Request(renewal)
        try:
            self._batcher.submit(request)
        except RuntimeError:
            # The client is closing: no task group to flush in; renew directly.
            await self._send([request])
        else:
            try:
                await request.done.wait()
            except BaseException:
                request.cancelled = True  # a patch already carrying it is harmless
                raise
        if request.error is not None:
            raise request.error
        assert request.object is not None
        return request.sent, request.object

    def _forget(self) -> None:
        _COMBINERS.discard(self._client, self._key, self)

    async def _flush(self, batch: list[_Request]) -> None:
        try:
            try:
                await self._send(batch)
            except InvalidObjectError:
                if len(batch) == 1:
                    raise
                # Some entry is no longer ours; only a patch of its own tells which.
                for request in batch:
                    if not request.cancelled:
                        try:
                            await self._send([request])
                        except APIError as exc:
                            request.error = exc
        except APIError as exc:
            for request in batch:
                if request.object is None and request.error is None:
                    request.error = exc
        except BaseException:
            for request in batch:
                if request.object is None and request.error is None:
                    request.error = RuntimeError("the client was closed")
            raise
        finally:
            for request in batch:
                request.done.set()

    async def _send(self, batch: list[_Request]) -> None:
        first = batch[0].renewal
        ops = [op for request in batch for op in request.renewal.ops()]
        sent = self._client.clock.monotonic()
        obj = await json_patch_status(
            self._client.store, first.kind, first.namespace, first.name, ops
        )
        for request in batch:
            request.sent, request.object = sent, obj


_COMBINERS = PerClient[tuple[str, str, str], _Combiner]()


def _combiner(renewal: Renewal) -> _Combiner:
    key = (renewal.kind.plural, renewal.namespace, renewal.name)
    return _COMBINERS.get(renewal.client, key, lambda: _Combiner(renewal.client, key))

"""Kubernetes Events, rate-limited and aggregated so a hot object cannot flood etcd.

:meth:`EventRecorder.emit` never blocks and never writes: it records the occurrence, and
:meth:`EventRecorder.run` writes in the background. Occurrences are aggregated like
client-go's ``EventCorrelator``: one Event per (object, type, reason) within a window,
whose ``count`` is bumped (and message replaced by the latest) instead of a new Event per
occurrence. Writes are paced by a token bucket per (object, reason) — so a chatty reason
such as ``Granted`` on a hot semaphore cannot delay a ``Reaped`` — and by one bucket for
the whole operator, which bounds the write rate to etcd whatever happens; occurrences that
wait for a token are merged into the next write, and only when too many distinct Events
are pending at once are new ones dropped (and counted).
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable
from typing import Final, Literal, final

import anyio
import attrs

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import Clock, rfc3339
from konductor_sdk._kernel.errors import APIError, NotFoundError
from konductor_sdk._kernel.objects import EVENT, KObject

log = logging.getLogger("konductor_operator.events")

EventType = Literal["Normal", "Warning"]
_MAX_MESSAGE: Final = 1024
_FORGET_EVERY: Final = 10.0


@final
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second of ``clock``'s monotonic time."""

    def __init__(self, clock: Clock, *, burst: float, rate: float) -> None:
        self._clock = clock
        self.burst = burst
        self.rate = rate
        self._tokens = burst
        self._at = clock.monotonic()

    def __repr__(self) -> str:
        return f"<TokenBucket tokens={self._tokens:.2f}/{self.burst:g} rate={self.rate:g}/s>"

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> bool:
        self._refill()
        return self._tokens >= 1.0

    def take(self) -> bool:
        if not self.available():
            return False
        self._tokens -= 1.0
        return True

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate


@final
@attrs.frozen
class EventStatistics:
    """Counters of an :class:`EventRecorder` since it started."""

    emitted: int
    created: int
    updated: int
    dropped: int
    failed: int
    pending: int


@attrs.define
class _Record:
    namespace: str
    involved: dict[str, str]
    type: str
    reason: str
    message: str
    first_seen: float
    event_name: str | None = None
    count: int = 0
    pending: int = 0
    first_time: str = ""


RecordKey = tuple[str, str, str, str]


@final
class EventRecorder:
    """Writes Events about objects, at a bounded rate.

    Args:
        client: the connected client used to write.
        clock: the operator's clock (token buckets and the aggregation window).
        component: ``source.component`` / ``reportingComponent``.
        instance: ``reportingInstance`` (the replica); default: the host name.
        per_object_burst / per_object_rate: the token bucket of each (object, reason)
            (writes, writes/s).
        global_burst / global_rate: the whole operator's token bucket.
        window: seconds during which repeats bump the same Event.
        max_pending: distinct Events waiting for a token beyond which new ones are dropped.
        on_result: called with ``created``/``updated``/``dropped``/``failed`` per write
            outcome (the operator counts them in ``konductor_operator_events_total``).
    """

    def __init__(
        self,
        client: Client,
        *,
        clock: Clock,
        component: str = "konductor-operator",
        instance: str | None = None,
        per_object_burst: float = 5,
        per_object_rate: float = 0.2,
        global_burst: float = 50,
        global_rate: float = 20,
        window: float = 600.0,
        max_pending: int = 5000,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self.component = component
        self.instance = instance or socket.gethostname()
        self._object_bucket: Callable[[], TokenBucket] = lambda: TokenBucket(
            clock, burst=per_object_burst, rate=per_object_rate
        )
        self._global = TokenBucket(clock, burst=global_burst, rate=global_rate)
        self._window = window
        self._max_pending = max_pending
        self._records: dict[RecordKey, _Record] = {}
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._dirty: dict[RecordKey, None] = {}
        self._wake = anyio.Event()
        self._emitted = self._created = self._updated = self._dropped = self._failed = 0
        self._on_result = on_result or (lambda result: None)
        self._last_forget = clock.monotonic()

    def __repr__(self) -> str:
        return f"<EventRecorder {self.component} pending={len(self._dirty)}>"

    def statistics(self) -> EventStatistics:
        return EventStatistics(
            emitted=self._emitted,
            created=self._created,
            updated=self._updated,
            dropped=self._dropped,
            failed=self._failed,
            pending=len(self._dirty),
        )

    def emit(self, obj: KObject, reason: str, message: str, *, type: EventType = "Normal") -> None:
        """Record that ``reason`` happened to ``obj``; written later, maybe aggregated.

        Args:
            obj: the involved object (must have namespace, name and UID).
            reason: CamelCase reason, e.g. ``Reaped``.
            message: human-readable; the latest message of an aggregate is kept.
            type: ``Normal`` or ``Warning``.
        """
        self._emitted += 1
        key: RecordKey = (obj.namespace, obj.uid or obj.name, type, reason)
        record = self._records.get(key)
        now = self._clock.monotonic()
        if record is not None and now - record.first_seen > self._window and not record.pending:
            record = None  # a new window starts a new Event, as client-go does
        if record is None:
            if len(self._dirty) >= self._max_pending:
                self._dropped += 1
                self._on_result("dropped")
                return
            record = self._records[key] = _Record(
                namespace=obj.namespace,
                involved=_involved(obj),
                type=type,
                reason=reason,
                message=message[:_MAX_MESSAGE],
                first_seen=now,
            )
        else:
            record.message = message[:_MAX_MESSAGE]
        record.pending += 1
        self._dirty[key] = None
        self._wake.set()

    async def run(self) -> None:
        """Write pending Events forever (until cancelled)."""
        while True:
            delay = await self.flush()
            if self._wake.is_set():
                self._wake = anyio.Event()
                continue
            with anyio.move_on_after(delay if delay is not None else 3600.0):
                await self._wake.wait()

    async def flush(self) -> float | None:
        """Write every pending Event that has a token now; the seconds until the next
        token is due for those still pending (``None``: nothing pending)."""
        wait: float | None = None
        for key in list(self._dirty):
            if not self._global.available():
                # Nothing more can be written now: stop instead of scanning the backlog.
                needed = self._global.wait_time()
                wait = needed if wait is None else min(wait, needed)
                break
            record = self._records[key]
            bucket = self._bucket(record)
            if not bucket.available():
                needed = bucket.wait_time()
                wait = needed if wait is None else min(wait, needed)
                continue
            bucket.take()
            self._global.take()
            del self._dirty[key]
            await self._write(record)
        now = self._clock.monotonic()
        if now - self._last_forget >= _FORGET_EVERY:
            self._last_forget = now
            self._forget_old()
        return wait

    def _bucket(self, record: _Record) -> TokenBucket:
        key = _bucket_key(record)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = self._object_bucket()
        return bucket

    async def _write(self, record: _Record) -> None:
        now = rfc3339(self._clock.now())
        pending, record.pending = record.pending, 0
        count = record.count + pending
        message = record.message
        if record.count or pending > 1:
            message = f"(combined from similar events): {message}"[:_MAX_MESSAGE]
        try:
            if record.event_name is not None:
                try:
                    await self._client.store.patch(
                        EVENT,
                        record.namespace,
                        record.event_name,
                        {"count": count, "lastTimestamp": now, "message": message},
                    )
                    self._updated += 1
                    self._on_result("updated")
                    record.count = count
                    return
                except NotFoundError:
                    record.event_name = None  # expired (--event-ttl) or deleted: recreate
            name = f"{record.involved['name']}.{secrets.token_hex(8)}"
            first = record.first_time or now
            await self._client.store.create(
                EVENT,
                record.namespace,
                {
                    "metadata": {"name": name, "namespace": record.namespace},
                    "involvedObject": record.involved,
                    "reason": record.reason,
                    "message": message,
                    "type": record.type,
                    "count": count,
                    "firstTimestamp": first,
                    "lastTimestamp": now,
                    "source": {"component": self.component, "host": self.instance},
                    "reportingComponent": self.component,
                    "reportingInstance": self.instance,
                },
            )
            self._created += 1
            self._on_result("created")
            record.event_name, record.count, record.first_time = name, count, first
        except APIError as exc:
            # Events are best effort: never let them stall or crash reconciliation.
            self._failed += 1
            self._on_result("failed")
            log.debug("could not write event %s: %s", record.reason, exc)

    def _forget_old(self) -> None:
        now = self._clock.monotonic()
        for key in [
            k
            for k, r in self._records.items()
            if now - r.first_seen > self._window and k not in self._dirty
        ]:
            del self._records[key]
        if len(self._buckets) > 4 * max(len(self._records), 256):
            # Buckets of objects with nothing pending are full again soon; dropping them
            # only forgets a little rate history.
            live = {_bucket_key(r) for r in self._records.values()}
            self._buckets = {k: b for k, b in self._buckets.items() if k in live}


def _bucket_key(record: _Record) -> tuple[str, str, str]:
    return (record.namespace, record.involved["uid"] or record.involved["name"], record.reason)


def _involved(obj: KObject) -> dict[str, str]:
    return {
        "apiVersion": str(obj.raw.get("apiVersion", "")),
        "kind": str(obj.raw.get("kind", "")),
        "name": obj.name,
        "namespace": obj.namespace,
        "uid": obj.uid,
        "resourceVersion": obj.resource_version,
    }

"""The handle of one grant: token, weight, loss and preemption signals, release."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

import anyio

from konductor_sdk._engines.semaphore_commit import CLEANUP_SECONDS
from konductor_sdk._kernel.entries import Renewal

if TYPE_CHECKING:
    from konductor_sdk._engines.semaphore import Pool

log = logging.getLogger("konductor_sdk.semaphore")


@final
class Permit:
    """A grant held by this process: what :meth:`Semaphore.acquire` returns.

    Attributes:
        key: the acquisition key (the map key under ``status.holders``).
        token: the fencing token: strictly increasing per object across all grants;
            pass it to downstream systems so they can reject stale holders.
        weight: units held.
        burst: granted from burst capacity (lasts at most ``ttl_seconds``, not renewed).
        ttl_seconds: the entry's TTL (0: until released or the pod ends).
        preempt_requested: set when a higher-priority waiter asked this holder to yield.
    """

    def __init__(self, pool: Pool, key: str, entry: Mapping[str, Any], base: float) -> None:
        self._pool = pool
        self.key = key
        self.token = int(entry["token"])
        self.weight = pool.flavor.weight(pool.spec_seen, entry)
        self.mode: str | None = entry.get("mode")
        self.burst = bool(entry.get("burst"))
        self.ttl_seconds = int(entry.get("ttlSeconds", 0))
        self.preempt_requested = anyio.Event()
        self.renewal: Renewal | None = None
        if self.ttl_seconds > 0:
            self.renewal = Renewal(
                client=pool.client,
                kind=pool.flavor.kind,
                namespace=pool.namespace,
                name=pool.name,
                path=("status", "holders", key),
                expect={"holder": entry["holder"], "token": self.token},
                ttl_seconds=self.ttl_seconds,
                last_ok_sent=base,
                renew_count=int(entry.get("renewCount", 0)),
            )
        self._lost_reason: str | None = None
        self._lost = anyio.Event()
        self._release_done: anyio.Event | None = None
        self._keep_scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        flags = "".join(f" {f}" for f, on in (("burst", self.burst), ("lost", self.lost)) if on)
        mode = f" mode={self.mode}" if self.mode else ""
        return (
            f"<Permit {self._pool.flavor.kind.kind} {self._pool.namespace}/{self._pool.name} "
            f"key={self.key!r} token={self.token} weight={self.weight}{mode}{flags}>"
        )

    @property
    def lost(self) -> bool:
        """True once the permit ended while held (TTL, reaped, removed, preempted-and-expired)."""
        return self._lost.is_set()

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    @property
    def deadline(self) -> float | None:
        """Monotonic time (client clock) after which the permit counts as lost if not renewed."""
        return self.renewal.deadline if self.renewal is not None else None

    async def wait_lost(self) -> str:
        """Wait until the permit is lost; returns the reason."""
        await self._lost.wait()
        return self._lost_reason or "lost"

    def _mark_lost(self, reason: str) -> None:
        if not self._lost.is_set() and not self.released:
            self._lost_reason = reason
            self._pool.stats["lost"] += 1
            log.warning("%r lost: %s", self, reason)
            self._lost.set()

    async def release(self) -> None:
        """Give the units back (idempotent; shielded from cancellation, bounded in time).

        Raises:
            APIError: the server could not be told; the entry expires by its TTL.
        """
        if self._release_done is not None:
            with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                await self._release_done.wait()
            return
        self._release_done = anyio.Event()
        if self._keep_scope is not None:
            self._keep_scope.cancel()
        try:
            with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                await self._pool.remove(self.key, token=self.token)
                self._pool.stats["released"] += 1
        finally:
            self._release_done.set()

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called (or the ``async with`` block ended)."""
        return self._release_done is not None

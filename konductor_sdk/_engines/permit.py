"""The handle of one grant: slots, token, loss and preemption signals, release.

A permit lives exactly as long as its session: nothing renews it on its own. It is lost
when its session's deadline passes (read from the clock on every access), when the grant
is removed from the object (reaped, force-released) or the object is deleted, or, for a
time-bounded grant (burst, or a holder yielding to preemption), at its own deadline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import final

import anyio

from konductor_sdk._kernel.clock import Clock
from konductor_sdk._kernel.sessions import Session
from konductor_sdk.fencing import FencingToken

log = logging.getLogger("konductor_sdk.semaphore")

CLEANUP_SECONDS = 10.0
"""Longest a shielded clean-up (leaving the queue, releasing) may take; past it the entry
is left to its session's expiry."""

Releaser = Callable[["Permit"], Awaitable[None]]


@final
class Permit:
    """A grant held by this process: what ``Semaphore.acquire()`` returns.

    Attributes:
        key: ``"<first slot>#<token>"``: names exactly this grant (``force_release``,
            ``koncli ... release``).
        slot: the first slot; :attr:`slots` are all of them.
        token: the fencing token: strictly increasing per object across all grants.
        fencing: what to present to a fenced resource (:class:`~konductor_sdk.Fence`):
            the object, the slots and the token.
        weight: units held. ``mode``: ``"read"``/``"write"`` for an RWMutex.
        burst: granted from burst capacity (lasts at most ``ttl_seconds``).
        ttl_seconds: the session's TTL (0: held until released or the pod ends), or the
            time bound of a burst grant.
        session: the name of the Session this grant lives and dies with.
        preempt_requested: set when a higher-priority waiter asked this holder to yield.
    """

    def __init__(
        self,
        *,
        resource: str,
        slot: int,
        weight: int,
        token: int,
        mode: str | None,
        burst: bool,
        session: Session,
        clock: Clock,
        release: Releaser,
        granted_rv: int = 0,
        deadline: float | None = None,
        ttl_seconds: int | None = None,
    ) -> None:
        self.slot = slot
        self.slots = tuple(range(slot, slot + weight))
        self.token = token
        self.key = f"{slot}#{token}"
        self.weight = weight
        self.mode = mode
        self.burst = burst
        self.fencing = FencingToken(resource, self.slots, token)
        self.session = session.name
        self.ttl_seconds = ttl_seconds if ttl_seconds is not None else session.ttl
        self.preempt_requested = anyio.Event()
        self._session = session
        self._clock = clock
        self._release = release
        self._own_deadline = deadline
        self._lost_reason: str | None = None
        self._lost = anyio.Event()
        self._release_done: anyio.Event | None = None
        self._listeners: list[Callable[[str], None]] = []
        self.granted_rv = granted_rv
        """resourceVersion of the write that granted it: older versions do not show it."""
        self.claim: str | None = None
        """The claim this grant came from (deleted once granted; ``None``: no claim)."""
        self._on_done: Callable[[], None] | None = None

    def __repr__(self) -> str:
        flags = "".join(f" {f}" for f, on in (("burst", self.burst), ("lost", self.lost)) if on)
        mode = f" mode={self.mode}" if self.mode else ""
        return (
            f"<Permit {self.fencing.resource.split('@')[0]} key={self.key!r} "
            f"token={self.token} weight={self.weight}{mode}{flags}>"
        )

    @property
    def deadline(self) -> float | None:
        """Monotonic time (client clock) after which the grant must not be trusted: its
        session's deadline, or its own bound if earlier; ``None`` for a pod-bound grant."""
        deadline = min(self._session.deadline, self._own_deadline or math.inf)
        return None if math.isinf(deadline) else deadline

    @property
    def lost(self) -> bool:
        """True once the grant ended while held: its session or own deadline passed (read
        from the clock now), it was removed from the object, or the object was deleted."""
        if self._lost_reason is None and not self.released:
            if self._session.lost:
                self.mark_lost(f"its session ended: {self._session.lost_reason}")
            elif self._own_deadline is not None and self._clock.monotonic() >= self._own_deadline:
                why = "burst grant reached its time bound" if self.burst else "preempted"
                self.mark_lost(f"{why} ({self.ttl_seconds}s)")
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        self.lost  # noqa: B018 - refreshes the deadline checks
        return self._lost_reason

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called (or the ``async with`` block ended)."""
        return self._release_done is not None

    async def wait_lost(self) -> str:
        """Wait until the permit is lost; returns the reason."""
        while not self.lost:
            left = (self.deadline or math.inf) - self._clock.monotonic()
            with anyio.move_on_after(max(0.0, min(left, 0.5))):
                await self._lost.wait()
        return self._lost_reason or "lost"

    def on_end(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` once if the grant is lost, or a preemption request
        arrives, while held (the ``async with`` form cancels its body there)."""
        self._listeners.append(listener)

    def mark_lost(self, reason: str) -> None:
        if self._lost_reason is not None or self.released:
            return
        self._lost_reason = reason
        log.warning("%r lost: %s", self, reason)
        self._lost.set()
        self._notify(reason)

    def mark_preempted(self) -> None:
        if self.preempt_requested.is_set() or self.released:
            return
        self.preempt_requested.set()
        self._notify("preempted by a higher-priority waiter")

    def set_deadline(self, deadline: float) -> None:
        """Bound the grant in time (a holder yielding to preemption)."""
        self._own_deadline = min(deadline, self._own_deadline or math.inf)

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, when the grant is released or found removed."""
        self._on_done = callback

    def done(self) -> None:
        callback, self._on_done = self._on_done, None
        if callback is not None:
            callback()

    def _notify(self, reason: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(reason)
            except Exception:  # one broken listener must not keep the others from hearing
                log.exception("%r: listener failed", self)

    async def release(self) -> None:
        """Give the units back (idempotent; shielded from cancellation, bounded in time).

        Raises:
            APIError: the server could not be told; the grant ends with its session.
        """
        if self._release_done is not None:
            with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                await self._release_done.wait()
            return
        self._release_done = anyio.Event()
        try:
            with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                await self._release(self)
        finally:
            self._release_done.set()

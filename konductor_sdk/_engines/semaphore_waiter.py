"""What one waiting request of this client is, and how it is told the outcome.

A :class:`Waiter` is one task blocked on its own :class:`Signal` until the
:class:`~konductor_sdk._engines.semaphore_grants.GrantCoordinator` decided for it: granted
(:class:`Granted`), to start over under a fresh session (:data:`RESTART`), not granted at
once (:data:`REJECTED`, for a claimless attempt), or an error.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import anyio
import anyio.lowlevel
import attrs

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import APIError, KonductorError
from konductor_sdk._kernel.sessions import Session
from konductor_sdk._machines import semaphore_plan as planning

log = logging.getLogger("konductor_sdk.semaphore")

RESTART: Final = "restart"
"""Outcome: the waiter's session ended while it waited; queue again with a fresh one."""
REJECTED: Final = "rejected"
"""Outcome of a claimless attempt that could not be granted at once."""


@attrs.frozen
class Granted:
    """What the write that granted a waiter said."""

    slot: int
    weight: int
    token: int
    burst: bool
    sent: float
    """Client-clock time the granting write was sent (a burst grant's bound counts from it)."""
    resource_version: str
    ttl_seconds: int | None


Outcome = Granted | BaseException | str


@final
class Signal:
    """A one-shot wake-up for one waiting task: what ``anyio.Event`` does, in a tenth of the
    memory (no deque per event), for the thousand waiters a process may park. asyncio only,
    like the client it belongs to."""

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> None:
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        finally:
            self._future = None


@attrs.define(eq=False, slots=True)
class Waiter:
    """One request of this client, as the coordinator sees it."""

    request: planning.Request
    session: Session
    direct: bool
    """A claimless attempt (fast path); granted only if nobody is queued and it fits."""
    entry: dict[str, Any]
    """The grant's fields besides weight/token (holder, priority, mode...)."""
    event: Signal = attrs.field(factory=Signal)
    outcome: Outcome | None = None
    writing: bool = False
    abandoned: bool = False
    asked: set[int] = attrs.field(factory=set)
    """Tokens of the holders this waiter asked to yield."""

    def finish(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.event.set()


def spawn_quietly(client: Client, func: Callable[..., Awaitable[Any]], *args: Any) -> bool:
    """Run ``func(*args)`` in the client's background; a failure is logged, never raised
    into the client's task group (which would take its watches down). ``False`` if the
    client is closing."""

    async def quietly() -> None:
        try:
            await func(*args)
        except (APIError, KonductorError, RuntimeError) as exc:
            log.debug("background %s failed: %s", getattr(func, "__name__", func), exc)

    try:
        client.spawn(quietly)
    except RuntimeError:
        return False
    return True


def claim_name(target: str) -> str:
    """A fresh claim name for ``target`` (chosen here, so a cancelled create can be undone)."""
    return f"{target[:240]}-{secrets.token_hex(4)}"

"""What one waiting request of this client is, and how it is told the outcome.

A :class:`Waiter` is one task blocked on its own future until the
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
@attrs.frozen
class OwnClaim:
    """The claim of one of our waiters: what deleting exactly it takes (the server's
    answer to its create is not kept: the watch's cache has the claim itself)."""

    name: str
    uid: str


@final
@attrs.define(eq=False, slots=True)
class Waiter:
    """One request of this client, as the coordinator sees it.

    A thousand of them may be parked in one process, so a waiter is only this record and
    one future (no event object, no coroutine of its own): what a grant writes besides
    weight and token is derived from its request (:func:`grant_fields`).
    """

    request: planning.Request
    session: Session
    direct: bool
    """A claimless attempt (fast path); granted only if nobody is queued and it fits."""
    outcome: Outcome | None = None
    writing: bool = False
    abandoned: bool = False
    asked: frozenset[int] = frozenset()
    """Tokens of the holders this waiter asked to yield."""
    _woken: asyncio.Future[None] | None = attrs.field(default=None, init=False)

    def finish(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            woken = self._woken
            if woken is not None and not woken.done():
                woken.set_result(None)

    def decided(self) -> Awaitable[None]:
        """What to await until :meth:`finish` was called (a checkpoint if it was already).
        asyncio only, like the client it belongs to."""
        if self.outcome is not None:
            return anyio.lowlevel.checkpoint()
        self._woken = asyncio.get_running_loop().create_future()
        return self._woken


def grant_fields(request: planning.Request, holder: str) -> dict[str, Any]:
    """The fields of a grant for ``request`` besides its weight, token and bookkeeping."""
    entry: dict[str, Any] = {"holder": holder}
    if request.priority:
        entry["priority"] = request.priority
    if request.preemptible:
        entry["preemptible"] = True
    if "mode" in request.fields:
        entry["mode"] = request.fields["mode"]
    return entry


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

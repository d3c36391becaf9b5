"""The client-side protocol of a Once: judging a runner's session, running under one.

A Once's runner is one entry in ``status.holders`` naming its session; its liveness is that
session, renewed by the runner's client with everything else it holds (no per-entry
renewal). Two things follow:

* **The runner gives up first.** :func:`run_while_alive` runs the function only while the
  runner's session lives: when its deadline passes (the owner's deadline comes before any
  observer may judge it dead, see :mod:`~konductor_sdk._kernel.sessions`) the function is
  cancelled, and the runner discards its result.
* **Who may take over.** The operator removes the entry of a session it judged dead, and
  then anyone claims. A waiter of the *same user* as the runner (the admission policy lets
  only the entry's creator remove it) does not need the operator: :class:`RunnerJudge`
  watches the runner's Session object alone and calls it dead when its ``renewCount`` has
  not changed for its ``ttlSeconds`` on the waiter's own monotonic clock, or when it is
  gone. A waiter of another user waits for the operator; with the operator down, a dead
  runner of another user blocks the Once until the operator is back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, final

import anyio

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.objects import SESSION
from konductor_sdk._kernel.sessions import Session
from konductor_sdk._kernel.waiting import wait_any
from konductor_sdk._kernel.watch import KindWatch


@final
class RunnerJudge:
    """Judges, on this process's monotonic clock, whether a runner's session is dead."""

    def __init__(self, client: Client, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._tracker = ExpiryTracker(client.clock)
        self._stack = contextlib.AsyncExitStack()
        self._watched: tuple[str, KindWatch] | None = None

    async def __aenter__(self) -> RunnerJudge:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._stack.aclose()

    async def _watch(self, session: str) -> KindWatch:
        if self._watched is not None and self._watched[0] == session:
            return self._watched[1]
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()
        self._tracker.retain(())
        watch = await self._stack.enter_async_context(
            self._client._watching(
                SESSION, self._namespace, field_selector=f"metadata.name={session}"
            )
        )
        self._watched = (session, watch)
        return watch

    async def dead(self, session: str, changed: anyio.Event) -> bool:
        """Wait until ``session`` is judged dead (``True``) or ``changed`` is set
        (``False``). A session bound to its pod (``ttlSeconds: 0``) is only ever judged by
        the operator."""
        watch = await self._watch(session)
        clock = self._client.clock
        while not changed.is_set():
            seen = watch.next_change(session, self._namespace)
            obj = watch.get(session, self._namespace)
            if obj is None:
                return True  # deleted: expired (operator, GC) or closed by its owner
            ttl = obj.spec.get("ttlSeconds")
            delay: float | None = None
            if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0:
                self._tracker.observe(session, obj.spec.get("renewCount"), ttl)
                if self._tracker.expired(session):
                    return True
                expires = self._tracker.expires_at(session)
                delay = None if expires is None else max(0.0, expires - clock.monotonic())
            await wait_any(changed, seen, delay=delay)
        return False


async def run_while_alive(
    fn: Callable[[], Awaitable[Any]], session: Session
) -> tuple[bool, Any, BaseException | None]:
    """Run ``fn`` while ``session`` lives: ``(False, None, None)`` if the session was lost
    first (``fn`` was cancelled), else ``(True, value, None)`` or ``(True, None, error)``."""
    value: Any = None
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as body:

            async def watch_lost() -> None:
                await session.wait_lost()
                body.cancel()

            tg.start_soon(watch_lost)
            try:
                value = await fn()
            except Exception as exc:
                error = exc
        tg.cancel_scope.cancel()
    if body.cancelled_caught and session.lost:
        return False, None, None
    return True, value, error


@contextlib.asynccontextmanager
async def judging(client: Client, namespace: str) -> AsyncIterator[RunnerJudge]:
    """A :class:`RunnerJudge` for the duration of one wait."""
    async with RunnerJudge(client, namespace) as judge:
        yield judge

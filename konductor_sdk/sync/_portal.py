"""The event loop behind the blocking facade.

Blocking callers (training scripts, shell-ish jobs) share one asyncio event loop running in
a daemon thread, started on first use through an anyio :class:`BlockingPortal`. Every
blocking method is the async one run in that loop, so the sync and async APIs cannot drift
apart, background renewals keep running while the caller's thread is busy, and one watch
per kind serves every blocking waiter in the process.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_cm: AbstractContextManager[BlockingPortal] | None = None


def portal() -> BlockingPortal:
    """The process-wide portal, started on first use and stopped at interpreter exit."""
    global _portal, _portal_cm
    with _lock:
        if _portal is None:
            _portal_cm = start_blocking_portal("asyncio")
            _portal = _portal_cm.__enter__()
            atexit.register(_stop)
        return _portal


def _stop() -> None:
    global _portal, _portal_cm
    with _lock:
        cm, _portal_cm, _portal = _portal_cm, None, None
    if cm is not None:
        # Cancels whatever still runs there (renewers of permits never released);
        # their entries then expire by TTL like those of any process that died.
        cm.__exit__(None, None, None)


def run(func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``await func(*args, **kwargs)`` in the portal's loop and return its result.

    KeyboardInterrupt in the calling thread cancels the call in the loop.
    """

    async def call() -> T:
        return await func(*args, **kwargs)

    future = portal().start_task_soon(call)
    try:
        return future.result()
    except BaseException:
        # Interrupted while waiting (KeyboardInterrupt, SystemExit): cancel the call in the
        # loop rather than leave it running unattended. A no-op if it already finished.
        future.cancel()
        raise


def make(factory: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Construct an object inside the loop's thread (for objects that bind to the loop)."""

    async def call() -> T:
        return factory(*args, **kwargs)

    return portal().call(call)


def enter(cm: AbstractAsyncContextManager[T]) -> AbstractContextManager[T]:
    """A blocking context manager around an async one; its task stays in the loop, so
    task groups and cancel scopes opened by ``__aenter__`` keep working."""
    return portal().wrap_async_context_manager(cm)


def wrap(func: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """``wrap(async_method)`` gives the blocking twin (same signature, same docstring)."""

    @functools.wraps(func)
    def blocking(*args: Any, **kwargs: Any) -> T:
        return run(func, *args, **kwargs)

    return blocking

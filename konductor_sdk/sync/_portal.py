"""The event loop behind the blocking facade.

Blocking callers (training scripts, shell-ish jobs) share one asyncio event loop running in
a daemon thread, started on first use through an anyio :class:`BlockingPortal`. Every
blocking method is the async one run in that loop, so the sync and async APIs cannot drift
apart, background renewals keep running while the caller's thread is busy, and one watch
per kind serves every blocking waiter in the process.

At interpreter exit the loop's default client (the one primitives created without
``client=`` share) is closed in the loop, and then the loop is stopped; a client the
script made itself is the script's to close.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from konductor_sdk._kernel.client import _DEFAULTS

T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_cm: AbstractContextManager[BlockingPortal] | None = None

# How long interpreter exit waits for the default client to close (seconds). Closing aborts
# the TLS connections rather than negotiating, so this only matters if the loop is stuck.
_CLOSE_TIMEOUT = 5.0


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
        cm, portal_, _portal_cm, _portal = _portal_cm, _portal, None, None
    if cm is None or portal_ is None:
        return
    _close_default_client(portal_)
    # Cancels whatever still runs there (renewers of permits never released);
    # their entries then expire by TTL like those of any process that died.
    cm.__exit__(None, None, None)


def _close_default_client(portal_: BlockingPortal) -> None:
    """Close the loop's default client, so its HTTP session and sockets do not outlive the
    loop (``ResourceWarning: unclosed ...`` at exit). Never blocks exit for long."""

    async def close() -> None:
        client = _DEFAULTS.get(asyncio.get_running_loop())
        if client is not None:
            with anyio.move_on_after(_CLOSE_TIMEOUT):
                await client.aclose()

    try:
        future = portal_.start_task_soon(close)
    except RuntimeError:
        return  # the loop is already gone: nothing can be closed there
    try:
        future.result(timeout=_CLOSE_TIMEOUT + 1)
    except concurrent.futures.TimeoutError:
        future.cancel()  # the loop is stuck; exit anyway
    except Exception:  # best effort at exit: the loop is stopped next regardless
        pass


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

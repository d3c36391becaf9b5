"""The event loop behind the blocking twins.

Blocking callers (training scripts, shell-ish jobs) share one asyncio event loop running in
a daemon thread, started on first use through an anyio :class:`BlockingPortal`. Every
blocking method is the async one run in that loop, so the sync and async APIs cannot drift
apart, background renewals keep running while the caller's thread is busy, and one watch
per kind serves every blocking waiter in the process.

:func:`shutdown` (also run at interpreter exit) ends ``with`` blocks still open in other
threads, closes the loop's default client and every client the blocking side created, and
stops the loop; the next blocking call starts a new one.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from konductor_sdk._kernel.client import _DEFAULTS, Client

T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_cm: AbstractContextManager[BlockingPortal] | None = None
_atexit_registered = False
# Clients the blocking side created (``konductor_sdk.sync.Client``); closed by shutdown().
_clients: weakref.WeakSet[Client] = weakref.WeakSet()
# Run in the loop by shutdown() before the clients are closed (see _context).
_shutdown_hooks: list[Callable[[], Awaitable[None]]] = []

# How long shutdown waits for open blocks to end and for clients to close (seconds).
# Closing aborts the TLS connections rather than negotiating, so this only matters if the
# loop is stuck.
_CLOSE_TIMEOUT = 5.0


def portal() -> BlockingPortal:
    """The process-wide portal, started on first use and stopped by :func:`shutdown`."""
    global _portal, _portal_cm, _atexit_registered
    with _lock:
        if _portal is None:
            _portal_cm = start_blocking_portal("asyncio", name="konductor-sync")
            _portal = _portal_cm.__enter__()
            if not _atexit_registered:
                atexit.register(shutdown)
                _atexit_registered = True
        return _portal


def run(func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``await func(*args, **kwargs)`` in the portal's loop and return its result.

    KeyboardInterrupt (or any exception) in the calling thread cancels the call in the
    loop. A result that arrives anyway is given back if it can be (``release()``: a
    permit or a lease granted just as the caller was interrupted), since nobody else would.
    """
    call = _Call(func, args, kwargs)
    portal_ = portal()
    future: concurrent.futures.Future[T] | None = None
    try:
        future = portal_.start_task_soon(call.run)
        return future.result()
    except BaseException:
        if future is None or not future.done():
            with contextlib.suppress(RuntimeError):  # the loop is gone
                portal_.call(call.abandon)
        if future is not None and _succeeded(future):
            # It finished before the loop heard of the interruption: nobody will see it.
            _give_back_soon(future.result())
        raise


class _Abandoned(Exception):
    """The caller of a blocking call was interrupted; its result was given back."""


class _Call(Generic[T]):
    """One blocking call's task in the loop, which the calling thread can abandon."""

    def __init__(
        self, func: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs
        self.scope: anyio.CancelScope | None = None
        self.abandoned = False  # only touched in the loop thread

    async def run(self) -> T:
        with anyio.CancelScope() as self.scope:
            if self.abandoned:
                self.scope.cancel()
            result = await self.func(*self.args, **self.kwargs)
            if not self.abandoned:
                return result
            await _give_back(result)
        raise _Abandoned(f"{self.func!r} was abandoned by its caller")

    def abandon(self) -> None:
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()


def call(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call the plain function ``func(*args, **kwargs)`` in the portal's loop thread (for
    constructors and methods of objects that belong to that loop)."""

    async def inner() -> T:
        return func(*args, **kwargs)

    return portal().call(inner)


def track(client: Client) -> None:
    """Have :func:`shutdown` close ``client`` (one the blocking side created)."""
    _clients.add(client)


def on_shutdown(hook: Callable[[], Awaitable[None]]) -> None:
    """Run ``await hook()`` in the loop at shutdown, before the clients are closed."""
    _shutdown_hooks.append(hook)


def shutdown() -> None:
    """Stop the blocking side's event loop, as interpreter exit does.

    ``with`` blocks still open in other threads are ended (their permits and leases given
    back), the loop's default client and every :class:`konductor_sdk.sync.Client` not yet
    closed are closed, and the loop is stopped; what still runs there (renewers of permits
    never released) is cancelled, and their entries expire by TTL like those of a process
    that died. Idempotent; a later blocking call starts a new loop. Never blocks for long.
    """
    global _portal, _portal_cm
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("shutdown() blocks: call it from a thread without an event loop")
    with _lock:
        cm, portal_, _portal_cm, _portal = _portal_cm, _portal, None, None
    if cm is None or portal_ is None:
        return
    _finish(portal_)
    with contextlib.suppress(RuntimeError):  # already stopped
        portal_.call(portal_.stop, True)
    cm.__exit__(None, None, None)


def _finish(portal_: BlockingPortal) -> None:
    """End open blocks, then close the clients, in the loop; bounded in time."""

    async def finish() -> None:
        with anyio.move_on_after(_CLOSE_TIMEOUT):
            for hook in list(_shutdown_hooks):
                await hook()
        clients = set(_clients)
        default = _DEFAULTS.get(asyncio.get_running_loop())
        if default is not None:
            clients.add(default)
        with anyio.move_on_after(_CLOSE_TIMEOUT):
            for client in clients:
                await client.aclose()

    try:
        future = portal_.start_task_soon(finish)
    except RuntimeError:
        return  # the loop is already gone: nothing can be closed there
    try:
        future.result(timeout=2 * _CLOSE_TIMEOUT + 1)
    except concurrent.futures.TimeoutError:
        future.cancel()  # the loop is stuck; stop anyway
    except Exception:  # best effort: the loop is stopped next regardless
        pass


def _succeeded(future: concurrent.futures.Future[T]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


async def _give_back(result: object) -> None:
    release = getattr(result, "release", None)
    if release is not None and inspect.iscoroutinefunction(release):
        with anyio.CancelScope(shield=True):
            await release()


def _give_back_soon(result: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is gone: the entry expires by its TTL
        portal().start_task_soon(_give_back, result)


shutdown.__module__ = "konductor_sdk.sync"  # its public home (reprs, tracebacks, docs)

"""``with`` over ``async with``: the one context-manager machinery of every blocking twin.

:func:`blocking` turns an async context manager into a blocking one whose ``__aenter__``
and ``__aexit__`` run in *one* task of the portal's loop, so the task groups, cancel
scopes and per-task bookkeeping the async one opens on entry are still there on exit.
:class:`BlockingContext` is the mixin behind ``with twin:`` (one stack per thread, so one
twin serves many threads); :class:`NotReentrant` is the per-thread re-entrancy check of
the lock twins.

A blocking body cannot be cancelled. Where the async form would cancel its ``async with``
body (a permit or lease lost, preempted, yielded), the blocking body runs on: the signal is
on the handle meanwhile (``permit.lost``, ``permit.preempt_requested``, ``held.lost``),
the resource is given back when the block ends, and the loss is raised then
(:class:`~konductor_sdk.PermitLost`, :class:`~konductor_sdk.LeadershipLost`), as the async
``__aexit__`` does. Ctrl-C while entering cancels the entry in the loop (leaving the queue).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Final, Generic, Protocol, TypeVar, final

import anyio

from . import _portal

V = TypeVar("V")  # what the async context manager gives
E = TypeVar("E")  # what the blocking one gives
ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

_open: weakref.WeakSet[_Block[Any, Any]] = weakref.WeakSet()


@final
class _Block(AbstractContextManager[E], Generic[V, E]):
    """One ``with`` over one ``async with``; single use."""

    def __init__(self, acm: AbstractAsyncContextManager[V], convert: Callable[[V], E]) -> None:
        self._acm = acm
        self._convert = convert
        self._entered: concurrent.futures.Future[V] = concurrent.futures.Future()
        self._task: concurrent.futures.Future[bool | None] | None = None
        # Loop side (touched only in the loop thread):
        self._scope: anyio.CancelScope | None = None
        self._exit: anyio.Event | None = None
        self._exc_info: ExcInfo = (None, None, None)
        self._exiting = False
        self._abandoned = False
        self._left: anyio.Event | None = None

    async def _run(self) -> bool | None:
        self._exit = anyio.Event()
        self._left = anyio.Event()
        with anyio.CancelScope() as self._scope:
            if self._abandoned:
                self._scope.cancel()
            try:
                value = await self._acm.__aenter__()
            except BaseException as exc:
                if not self._entered.done():
                    self._entered.set_exception(exc)
                raise
            if not self._abandoned:
                self._entered.set_result(value)
                _open.add(self)
                # The body runs in the caller's thread: nothing here may end it early.
                with anyio.CancelScope(shield=True):
                    await self._exit.wait()
            # Else the caller was interrupted just as the entry succeeded: leave at once.
            # (Not shielded: __aexit__ closes the scopes __aenter__ opened, at this level.)
            try:
                return await self._acm.__aexit__(*self._exc_info)
            except BaseException as exc:
                if exc is self._exc_info[1]:
                    return False  # the body's own exception: the caller re-raises it
                raise
            finally:
                _open.discard(self)
                self._left.set()
        return None  # cancelled while entering: the async side cleaned up after itself

    def _request_exit(self, exc_info: ExcInfo) -> None:
        """In the loop: let the task leave the async context manager."""
        if not self._exiting and self._exit is not None:
            self._exiting = True
            self._exc_info = exc_info
            self._exit.set()

    def _abandon(self) -> None:
        """In the loop: the caller was interrupted while entering."""
        self._abandoned = True
        if self._entered.done() and self._entered.exception() is None:
            self._request_exit((None, None, None))
        elif self._scope is not None:
            self._scope.cancel()

    def __enter__(self) -> E:
        if self._task is not None or self._entered.done():
            raise RuntimeError(f"{self!r} can be entered only once")
        portal = _portal.portal()
        try:
            self._task = portal.start_task_soon(self._run)
            value = self._entered.result()
        except BaseException as exc:
            entry_failed = self._entered.done() and self._entered.exception() is exc
            if not entry_failed:  # interrupted while waiting (Ctrl-C)
                # Bounded: Ctrl-C must end the wait even if the loop does not answer (the
                # entry is then cancelled when it does, or at shutdown).
                with contextlib.suppress(RuntimeError, TimeoutError):  # the loop is gone
                    portal.start_task_soon(_call, self._abandon).result(ABANDON_SECONDS)
            raise
        return self._convert(value)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task = self._task
        if task is None:
            raise RuntimeError(f"{self!r} was not entered")
        if not task.done():  # else shutdown() ended the block already
            _portal.call(self._request_exit, (exc_type, exc, tb))
        return task.result()


ABANDON_SECONDS: Final = 5.0
"""Longest Ctrl-C during an entry waits for the loop to take the cancellation."""


async def _call(func: Callable[[], object]) -> None:
    func()


def blocking(
    acm: AbstractAsyncContextManager[V], convert: Callable[[V], E]
) -> AbstractContextManager[E]:
    """A blocking context manager over ``acm`` (see the module docstring); ``convert``
    turns what ``acm`` gives into what the blocking one gives (e.g. ``Permit._wrap``)."""
    return _Block(acm, convert)


async def _end_open_blocks() -> None:
    """At shutdown: blocks still open (in daemon threads) leave their async context
    managers, giving back what they hold, before the clients are closed."""
    blocks = list(_open)
    for block in blocks:
        block._request_exit((None, None, None))
    for block in blocks:
        if block._left is not None:
            await block._left.wait()


_portal.on_shutdown(_end_open_blocks)

_stacks = threading.local()


def _stack(owner: object) -> list[AbstractContextManager[Any]]:
    by_owner: dict[int, list[AbstractContextManager[Any]]] = _stacks.__dict__.setdefault(
        "by_owner", {}
    )
    return by_owner.setdefault(id(owner), [])


class BlockingContext:
    """Mixin of the twins usable as ``with twin as value:`` (over ``async with``).

    The generated ``__enter__`` says what to enter (``blocking(self._async, convert)``);
    ``__exit__`` leaves the innermost block this thread entered through this object.
    """

    def _enter_block(self, block: AbstractContextManager[E]) -> E:
        value = block.__enter__()
        _stack(self).append(block)
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack = _stack(self)
        block = stack.pop()
        if not stack:
            del _stacks.by_owner[id(self)]
        return block.__exit__(exc_type, exc, tb)


class _Holding(Protocol):
    @property
    def released(self) -> bool: ...

    @property
    def lost(self) -> bool: ...


H = TypeVar("H", bound=_Holding)


class NotReentrant:
    """Mixin of the lock twins: a thread that holds the lock through this object and
    asks again gets :class:`RuntimeError` instead of waiting for itself forever.

    The async lock checks per task, and every blocking call runs in a task of its own, so
    the blocking side checks per thread.
    """

    def _check_thread(self) -> list[_Holding]:
        by_lock: weakref.WeakKeyDictionary[NotReentrant, list[_Holding]]
        by_lock = _stacks.__dict__.setdefault("held", weakref.WeakKeyDictionary())
        live = [h for h in by_lock.get(self, []) if not h.released and not h.lost]
        if live:
            raise RuntimeError(f"{self!r} is already held by this thread; it is not re-entrant")
        by_lock[self] = live
        return live

    def _owned(self, acquire: Callable[[], H]) -> H:
        live = self._check_thread()
        holding = acquire()
        live.append(holding)
        return holding

    def _owned_context(self, cm: AbstractContextManager[H]) -> AbstractContextManager[H]:
        @contextmanager
        def owned() -> Iterator[H]:
            live = self._check_thread()
            with cm as holding:
                live.append(holding)
                try:
                    yield holding
                finally:
                    if holding in live:
                        live.remove(holding)

        return owned()

"""What every blocking twin is made of: the async object it wraps, and the conversions
between the async and the blocking world (generated code calls these; see ``_generate``).

* :class:`Twin` holds the async object (``_async``); one twin per async object, so
  ``with client as c`` gives ``client`` back and ``stages.barrier("a")`` the same twin.
* :func:`attribute` exposes an instance attribute of the async object whose type the
  generator could not name; the type checker infers it from the async class.
* :func:`unwrap` and :func:`awaitable` turn blocking arguments into async ones: a twin into
  its async object, a plain callback into an async one that runs it in a worker thread.
* :class:`Event` and :class:`BlockingIterator` are the blocking faces of an
  :class:`anyio.Event` and of an async iterator.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, ParamSpec, Self, TypeVar, cast, final, overload

import anyio
import anyio.to_thread

from konductor_sdk._kernel.client import Client as AsyncClient

from . import _portal

A = TypeVar("A")  # the async object's type
T = TypeVar("T")
V = TypeVar("V")
P = ParamSpec("P")

_twins: weakref.WeakValueDictionary[int, Twin[Any]] = weakref.WeakValueDictionary()
_twins_lock = threading.Lock()


class Twin(Generic[A]):
    """A blocking twin of an async object: every method runs the async one in the
    portal's event loop (``konductor_sdk.sync._portal``); properties and attributes are
    read directly."""

    _async: A

    def _bind(self, value: A) -> None:
        self._async = value
        with _twins_lock:
            _twins[id(value)] = self
        if isinstance(value, AsyncClient):
            _portal.track(value)

    @classmethod
    def _wrap(cls, value: A) -> Self:
        """The twin of ``value`` (the existing one, if there is one)."""
        with _twins_lock:
            twin = _twins.get(id(value))
        if isinstance(twin, cls) and twin._async is value:
            return twin
        twin = cls.__new__(cls)
        twin._bind(value)
        return twin

    def __repr__(self) -> str:
        return repr(self._async)


@final
class Attribute(Generic[A, T]):
    """An instance attribute of the twin's async object, read through the twin."""

    def __init__(self, get: Callable[[A], T]) -> None:
        self._get = get

    @overload
    def __get__(self, twin: None, owner: type[Any]) -> Attribute[A, T]: ...

    @overload
    def __get__(self, twin: Twin[A], owner: type[Any]) -> T: ...

    def __get__(self, twin: Twin[A] | None, owner: type[Any]) -> T | Attribute[A, T]:
        if twin is None:
            return self
        return self._get(twin._async)


def attribute(cls: type[A], get: Callable[[A], T]) -> Attribute[A, T]:
    """``token = attribute(AsyncPermit, lambda a: a.token)``: typed as the async one's."""
    return Attribute(get)


@overload
def unwrap(twin: Twin[A]) -> A: ...


@overload
def unwrap(twin: Twin[A] | None) -> A | None: ...


def unwrap(twin: Twin[A] | None) -> A | None:
    """The async object behind ``twin`` (an async object passed instead is kept as is)."""
    if isinstance(twin, Twin):
        return twin._async
    return twin


def same(value: T) -> T:
    """The identity conversion (values that are the same in both worlds)."""
    return value


def maybe(convert: Callable[[V], T], value: V | None) -> T | None:
    """``convert(value)``, or ``None`` for ``None``."""
    return None if value is None else convert(value)


@overload
def awaitable(fn: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def awaitable(fn: None) -> None: ...


def awaitable(fn: Callable[P, T] | None) -> Callable[P, Coroutine[Any, Any, T]] | None:
    """A blocking callback as the async API wants it: run in a worker thread (a thread
    cannot be cancelled: the async side waits for it to return). A coroutine function is
    passed through and runs in the portal's loop."""
    if fn is None:
        return None
    if inspect.iscoroutinefunction(fn):
        return cast("Callable[P, Coroutine[Any, Any, T]]", fn)
    plain = fn

    async def in_thread(*args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(functools.partial(plain, *args, **kwargs))

    return in_thread


@final
class Event:
    """The blocking face of an :class:`anyio.Event` of the portal's loop (for example
    ``permit.preempt_requested``). Truthy once set, so ``if permit.preempt_requested:``
    reads as it did when the blocking facade exposed a ``bool``."""

    __module__ = "konductor_sdk.sync"  # its public home (reprs, tracebacks, docs)

    def __init__(self, event: anyio.Event) -> None:
        self._event = event

    def __repr__(self) -> str:
        return f"<Event {'set' if self.is_set() else 'unset'}>"

    def __bool__(self) -> bool:
        return self.is_set()

    def is_set(self) -> bool:
        """Whether the event has been set."""
        return self._event.is_set()

    def wait(self) -> None:
        """Block until the event is set (Ctrl-C stops waiting)."""
        _portal.run(self._event.wait)


@final
class BlockingIterator(Iterator[T], Generic[V, T]):
    """Iterates an async iterator of the portal's loop, one ``__anext__`` per step."""

    def __init__(self, iterator: AsyncIterator[V], convert: Callable[[V], T]) -> None:
        self._iterator = iterator
        self._convert = convert

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        try:
            value = _portal.run(self._iterator.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None
        return self._convert(value)

    def close(self) -> None:
        """Close the async iterator (an async generator runs its cleanup)."""
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            _portal.run(aclose)

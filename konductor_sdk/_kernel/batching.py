"""Combining the requests of one client that arrive while a write is in flight.

Many tasks of one process acting on one object at once (barrier parties arriving, entries
renewing) would each send a write and, for compare-and-swap writes, lose most races. A
:class:`Batcher` queues their requests; the first starts a flusher in the client's task
group, which writes everything pending in one go, then whatever queued meanwhile, until
nothing is left. Requests are cancelled by their callers setting ``cancelled``: one not yet
taken into a batch is dropped; one already taken is the flush function's business.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar, final

import anyio

from konductor_sdk._kernel.client import Client


class Request(Protocol):
    cancelled: bool
    error: BaseException | None

    @property
    def done(self) -> anyio.Event: ...


R = TypeVar("R", bound=Request)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@final
class PerClient(Generic[K, V]):
    """One ``V`` per client and key (e.g. per object), forgotten with the client: where a
    client's batchers and sites live, so that every task of the process finds the same."""

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[Client, dict[K, V]] = weakref.WeakKeyDictionary()

    def get(self, client: Client, key: K, make: Callable[[], V]) -> V:
        """The value for ``(client, key)``, made by ``make()`` the first time."""
        table = self._tables.setdefault(client, {})
        found = table.get(key)
        if found is None:
            found = table[key] = make()
        return found

    def discard(self, client: Client, key: K, value: V) -> None:
        """Forget ``(client, key)`` if it still maps to ``value``."""
        table = self._tables.get(client)
        if table is not None and table.get(key) is value:
            del table[key]


@final
class Batcher(Generic[R]):
    """Feeds ``flush`` the pending requests, a batch at a time, in ``client``'s task group.

    ``flush(batch)`` must set every request's ``done`` (with ``error`` on failure).
    ``idle`` is called when the flusher finds nothing more to do.
    """

    def __init__(
        self,
        client: Client,
        flush: Callable[[list[R]], Awaitable[None]],
        idle: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._flush = flush
        self._idle = idle
        self._pending: list[R] = []
        self._flushing = False

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, request: R) -> None:
        """Queue ``request``. Raises ``RuntimeError`` (and queues nothing) if the client is
        closed and no flusher runs."""
        self._pending.append(request)
        if not self._flushing:
            try:
                self._client.spawn(self._drain)
            except RuntimeError:
                self._pending.remove(request)
                raise
            self._flushing = True

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = [r for r in self._pending if not r.cancelled]
                self._pending = []
                if batch:
                    await self._flush(batch)
        finally:
            self._flushing = False
            for request in self._pending:  # only if the flusher itself was cancelled
                request.error = RuntimeError("the client was closed")
                request.done.set()
            self._pending = []
            if self._idle is not None:
                self._idle()

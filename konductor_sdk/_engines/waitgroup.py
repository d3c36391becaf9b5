"""The client-side protocol of a WaitGroup: one process's counter changes, combined.

Many tasks of one process calling ``done()`` at once would each run a compare-and-swap on
the same counter and lose most races. Their changes are queued instead and one background
flusher applies every pending delta in **one** CAS (in order, each judged on its own: a
delta that would take the counter below zero is refused alone). A write stops after a
delta that brings the counter to zero — that is an epoch of its own, which waiters must be
able to see — and the rest go in the next write. Writes are retried on the watched version
for as long as they conflict, so a thousand workers finishing together all get through.
A batch with a decrement is judged on a fresh read: a lagging cache could show a counter
still at zero after someone's ``add()`` and refuse a legitimate ``done()``.
"""

from __future__ import annotations

from typing import Final, final

import anyio
import attrs

from konductor_sdk._kernel.batching import Batcher, PerClient
from konductor_sdk._kernel.cas import CasResult, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.objects import WAITGROUP, KObject
from konductor_sdk._machines import waitgroup as state

UNBOUNDED: Final = 1 << 30


@attrs.define(eq=False)
class Change:
    """One ``add(delta)`` of one caller."""

    delta: int
    done: anyio.Event = attrs.Factory(anyio.Event)
    cancelled: bool = False
    error: BaseException | None = None
    counter: int = 0
    """The counter right after this change."""
    cas: CasResult | None = None


@final
class CombinedCounter:
    """The counter changes of one client to one WaitGroup object."""

    def __init__(self, client: Client, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self._changes = Batcher[Change](client, self._flush)

    def __repr__(self) -> str:
        return f"<CombinedCounter waitgroup {self.namespace}/{self.name}>"

    async def apply(self, change: Change) -> None:
        """Queue ``change`` and wait until it was written (or refused: ``change.error``).
        A caller cancelled while its change is being written may or may not have it
        applied."""
        self._changes.submit(change)
        try:
            await change.done.wait()
        except BaseException:
            change.cancelled = True
            raise
        if change.error is not None:
            raise change.error

    async def _flush(self, batch: list[Change]) -> None:
        pending = batch
        try:
            while pending:
                pending = await self._write(pending)
        except BaseException as exc:
            for change in batch:
                if not change.done.is_set():
                    change.error = (
                        exc if isinstance(exc, Exception) else RuntimeError("client closed")
                    )
                    change.done.set()
            if not isinstance(exc, Exception):
                raise

    async def _write(self, changes: list[Change]) -> list[Change]:
        """One CAS for a prefix of ``changes``; returns the ones left for the next write."""
        live = [c for c in changes if not c.cancelled]
        if not live:
            return []
        now = rfc3339(self.client.clock.now())
        outcome: dict[int, int | ConfigurationError] = {}
        taken: list[Change] = []

        def mutate(obj: KObject) -> state.Status | None:
            outcome.clear()
            taken.clear()
            status: state.Status | None = None
            counter = state.normalize(obj.spec, obj.status)["counter"]
            for change in live:
                taken.append(change)
                try:
                    new = state.add(
                        obj.spec,
                        status if status is not None else obj.status,
                        delta=change.delta,
                        now=now,
                    )
                except ConfigurationError as exc:
                    outcome[id(change)] = exc
                    continue
                if new is not None:
                    status, counter = new, new["counter"]
                outcome[id(change)] = counter
                if new is not None and counter == 0:
                    break  # a drop to zero is an epoch of its own: the rest go next
            if status is not None:
                status["observedGeneration"] = obj.generation
            return status

        current = None
        if any(c.delta < 0 for c in live):
            current = await self.client.store.get(WAITGROUP, self.namespace, self.name)
        cas = await update_status(
            self.client,
            WAITGROUP,
            self.namespace,
            self.name,
            mutate,
            current=current,
            max_attempts=UNBOUNDED,
        )
        for change in taken:
            result = outcome[id(change)]
            if isinstance(result, ConfigurationError):
                change.error = result
            else:
                change.counter, change.cas = result, cas
            change.done.set()
        return [c for c in live if c not in taken]


_COUNTERS = PerClient[tuple[str, str], CombinedCounter]()


def counter_of(client: Client, namespace: str, name: str) -> CombinedCounter:
    """The one :class:`CombinedCounter` of ``client`` for WaitGroup ``namespace/name``."""
    return _COUNTERS.get(
        client, (namespace, name), lambda: CombinedCounter(client, namespace, name)
    )

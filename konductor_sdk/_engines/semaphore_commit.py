"""Group commit: one compare-and-swap write for every change a process queued meanwhile.

Every state change of one object made by one client goes through one :class:`Committer`:
operations submitted while a write is in flight are applied together, in submission
order, by the next write. A thousand tasks queueing at once cost a handful of writes
instead of a thousand racing ones, and a process never conflicts with itself. Each
operation is a pure mutation of the status; one that raises (``WouldBlock``, a weight that
no longer fits) must raise before changing anything, so the rest of the batch still goes
through. Afterwards the batch's status is settled (``_semaphore_state.settle_in_place``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import final

import anyio
import attrs

from konductor_sdk._kernel.batching import Batcher, PerClient
from konductor_sdk._kernel.cas import CasResult, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.entries import MAX_TTL_SECONDS
from konductor_sdk._kernel.errors import ConfigurationError, KonductorError
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines import semaphore as state

Op = Callable[[KObject, state.Status], None]
CLEANUP_SECONDS = 10.0
"""Longest a shielded cleanup (leaving the queue, releasing) may take; past it the entry
is left to expire by its TTL, since nobody renews it any more."""


def check_ttl(ttl: object, *, field: str = "ttl") -> int:
    """Validate a TTL in seconds: an int in [1, 86400], or 0 (pod-bound, checked later)."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL_SECONDS:
        raise ConfigurationError(
            f"{field} must be an int in [1, {MAX_TTL_SECONDS}] seconds "
            f"(or 0 for 'until released or the pod ends'), got {ttl!r}"
        )
    return ttl


def check_int(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigurationError(f"{field} must be an int in [{lo}, {hi}], got {value!r}")
    return value


@attrs.define(eq=False)
class _Pending:
    op: Op
    done: anyio.Event = attrs.field(factory=anyio.Event)
    error: BaseException | None = None
    result: KObject | None = None
    attempts: int = 0
    sent: float | None = None
    cancelled: bool = False
    """Never set: a queued op stays queued when its caller is cancelled."""


@final
class Committer:
    """Group commit for one object in one client (see the module docstring)."""

    def __init__(self, client: Client, flavor: state.Flavor, namespace: str, name: str) -> None:
        self.client = client
        self.flavor = flavor
        self.namespace = namespace
        self.name = name
        self.writes = 0
        self.conflicts = 0
        self._batcher = Batcher[_Pending](client, self._commit)
        self._plan: tuple[str, state.Plan] | None = None

    def plan(self, obj: KObject) -> state.Plan:
        """The plan of ``obj``, computed once per resourceVersion for all local waiters."""
        if self._plan is None or self._plan[0] != obj.resource_version:
            self._plan = (obj.resource_version, state.plan(self.flavor, obj.spec, obj.status))
        return self._plan[1]

    async def submit(
        self, op: Op, *, tally: list[int] | None = None, sent: list[float] | None = None
    ) -> KObject:
        """Apply ``op`` in the next write; returns the object as written (or as read, if
        nothing changed). Cancelling the caller does not withdraw an op already queued.

        The write attempts it took (conflicts included) are added to ``tally[0]``; if a
        write was made, ``sent[0]`` is set to the client-clock time it was sent (what a
        deadline for an entry it created counts from; see ``CasResult.sent``).
        """
        pending = _Pending(op)
        self._batcher.submit(pending)
        await pending.done.wait()
        if tally is not None:
            tally[0] += pending.attempts
        if sent is not None and pending.sent is not None:
            sent[0] = pending.sent
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def _commit(self, batch: list[_Pending]) -> None:
        errors: dict[int, BaseException] = {}

        def mutate(obj: KObject) -> state.Status | None:
            errors.clear()
            status: state.Status = copy.deepcopy(dict(obj.status))
            for i, pending in enumerate(batch):
                try:
                    pending.op(obj, status)
                except KonductorError as exc:
                    errors[i] = exc
            state.settle_in_place(
                self.flavor, obj.spec, status, now=rfc3339(self.client.clock.now())
            )
            if status == obj.status:
                return None
            status["observedGeneration"] = obj.generation
            return status

        try:
            result: CasResult = await update_status(
                self.client, self.flavor.kind, self.namespace, self.name, mutate
            )
        except Exception as exc:
            for pending in batch:
                pending.error = exc
                pending.done.set()
            return
        except BaseException:
            # The client is closing (the batcher was cancelled) during the write.
            for pending in batch:
                pending.error = RuntimeError(
                    "client closed: the write may or may not have been made"
                )
                pending.done.set()
            raise
        if result.wrote:
            self.writes += 1
            self.conflicts += result.attempts - 1
        for i, pending in enumerate(batch):
            pending.error = errors.get(i)
            pending.result = result.object
            pending.attempts = result.attempts
            pending.sent = result.sent
            pending.done.set()


_COMMITTERS = PerClient[tuple[str, str, str], Committer]()


def committer(client: Client, flavor: state.Flavor, namespace: str, name: str) -> Committer:
    """The committer of one object, shared by every front object in this client."""
    key = (flavor.kind.kind, namespace, name)
    return _COMMITTERS.get(client, key, lambda: Committer(client, flavor, namespace, name))

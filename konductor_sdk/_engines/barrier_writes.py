"""The writes one process makes on a barrier's counters: an arrival batch, departures.

Both are compare-and-swap writes retried on the version the shared watch delivers for as
long as they conflict: waiting never fails because others arrive too.

**An arrival whose answer was lost** (a timeout, a connection cut, a 5xx) may have been
applied. Every arrival write carries its batch id into ``status.recent``, and the write is
simply tried again with the same id: the mutation looks at the version it is computed on
and, if the batch is there, takes the recorded indices instead of arriving again. That
version is authoritative, because a CAS write only succeeds on the current version, which
includes the lost write if it was applied. Only if the batch could have dropped out of
``recent`` since (more than :data:`~konductor_sdk._machines.barrier.RECENT_LIMIT` batches
later) is it impossible to tell, and the parties are told so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import anyio
import attrs

from konductor_sdk._kernel.cas import CasResult, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import (
    APIError,
    BarrierFailed,
    ForbiddenError,
    InvalidObjectError,
    NotFoundError,
)
from konductor_sdk._kernel.objects import BARRIER, KObject
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._machines import barrier as state

Mutation = Callable[[KObject], state.Status | None]

UNBOUNDED: Final = 1 << 30
"""Attempts of a CAS that must not fail because others write too."""
LOST_ANSWER_RETRIES: Final = 5
"""Arrival writes tried after answers that never came (then the last error is raised)."""


def stamped(mutate: Mutation) -> Mutation:
    """``mutate`` that also records the spec generation its decision was made on."""

    def apply(obj: KObject) -> state.Status | None:
        new = mutate(obj)
        if new is not None:
            new["observedGeneration"] = obj.generation
        return new

    return apply


class _Unknowable(Exception):
    """The batch of a lost write dropped out of ``status.recent``."""


@attrs.frozen
class ArrivalTarget:
    """Where an arrival batch goes and whose it is."""

    client: Client
    namespace: str
    name: str
    session: str
    user: str


async def write_arrival(
    target: ArrivalTarget,
    *,
    batch: str,
    count: int,
    now: str,
    current: Callable[[], KObject | None],
) -> tuple[state.Arrival, CasResult]:
    """Record ``count`` parties as arrival batch ``batch`` (one CAS, retried while it
    conflicts, and after lost answers without ever counting a party twice).

    ``current()`` gives the newest version this process knows (the first attempt's base).

    Raises:
        NotFoundError: the barrier does not exist.
        InvalidObjectError, ForbiddenError: the server refused the write (nothing written).
        BarrierFailed: a lost answer that can no longer be resolved.
        APIError: answers kept getting lost.
    """
    maybe: list[tuple[int, int]] = []  # (generation, firstIndex) of writes maybe applied
    decided: list[state.Arrival] = []
    where = f"barrier {target.namespace}/{target.name}"

    def mutate(obj: KObject) -> state.Status | None:
        for generation, first in maybe:
            applied = state.arrival_applied(
                obj.status, batch=batch, generation=generation, first_index=first
            )
            if applied is None:
                raise _Unknowable(generation)
        arrival = state.arrive(
            obj.spec,
            obj.status,
            batch=batch,
            count=count,
            session=target.session,
            user=target.user,
            now=now,
        )
        decided[:] = [arrival]
        return arrival.status

    for attempt in range(LOST_ANSWER_RETRIES + 1):
        try:
            cas = await update_status(
                target.client,
                BARRIER,
                target.namespace,
                target.name,
                stamped(mutate),
                max_attempts=UNBOUNDED,
                current=current() if attempt == 0 else None,
            )
        except _Unknowable as exc:
            raise BarrierFailed(
                f"{where}: the answer to an arrival write was lost and it can no longer be "
                f"told whether it was recorded (more than {state.RECENT_LIMIT} arrival "
                f"batches since); if it was, these parties count in generation {exc.args[0]} "
                "without waiting there"
            ) from None
        except (NotFoundError, InvalidObjectError, ForbiddenError):
            raise  # a definite answer: nothing was written
        except (APIError, OSError, TimeoutError):
            if attempt == LOST_ANSWER_RETRIES:
                raise
            if decided and decided[0].count:
                maybe.append((decided[0].generation, decided[0].first_index))
            await anyio.sleep(backoff(attempt + 1, base=0.1, cap=2.0))
            continue
        return decided[0], cas
    raise AssertionError("unreachable")  # pragma: no cover


@attrs.define(eq=False)
class Departure:
    """Withdraw index ranges of one generation (combined with others of this process)."""

    generation: int
    spans: list[tuple[int, int]]
    user: str
    done: anyio.Event = attrs.Factory(anyio.Event)
    cancelled: bool = False
    error: BaseException | None = None
    removed: bool = False


async def write_departures(
    client: Client,
    namespace: str,
    name: str,
    requests: Sequence[Departure],
    *,
    now: str,
    current: KObject | None,
) -> CasResult:
    """Withdraw every request's ranges in one CAS; sets each request's ``removed``."""
    flags: dict[int, bool] = {}

    def mutate(obj: KObject) -> state.Status | None:
        flags.clear()
        status: state.Status | None = None
        for request in requests:
            new = state.depart(
                obj.spec,
                status if status is not None else obj.status,
                generation=request.generation,
                spans=request.spans,
                user=request.user,
                now=now,
            )
            flags[id(request)] = new is not None and new.get("phase") == state.WAITING
            status = new if new is not None else status
        return status

    cas = await update_status(
        client,
        BARRIER,
        namespace,
        name,
        stamped(mutate),
        max_attempts=UNBOUNDED,
        current=current,
    )
    for request in requests:
        request.removed = cas.wrote and flags.get(id(request), False)
    return cas

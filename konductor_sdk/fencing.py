"""Fencing tokens, and the guard a downstream resource uses to honour them.

A grant (a permit, a lease, leadership) can end while its holder still believes in it: the
holder was frozen, its network was cut, its renewal came too late. Konductor's holders give
up at their own deadline, before anyone else can be granted the same thing, but a process
frozen right after its last check can still send one write after that. Fencing is how the
resource that write lands on refuses it: every grant carries a token that grows with every
grant of the same primitive, and the resource remembers the highest token it has accepted.

For a Mutex, a Lease or leadership there is one holder at a time, so "reject anything lower
than the highest seen" is right. A Semaphore with ``permits=3`` has three valid holders at
once, so one counter would reject legitimate writes; instead every permit occupies
**slots** (unit ``i`` of ``0..permits-1``; a permit of weight ``w`` takes ``w`` adjacent
slots), and the rule is applied per slot: a write is accepted if no slot it presents has
seen a higher token. A stale holder is fenced out as soon as any of its slots is granted
again, and never before, because until then nobody else can be using those units::

    fence = Fence()                          # one per downstream resource (a table, a bucket)

    async with Semaphore("gpu-pool", permits=3) as permit:
        fence.admit(permit.fencing)          # raises FencedOut for a stale holder
        write_to_the_resource(...)

The check and the write must be atomic at the resource (do both under one lock, or as one
conditional database update keyed by ``(token.resource, slot)``): :class:`Fence` is the
in-process version of that rule, thread-safe, with :meth:`Fence.snapshot` to persist it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import final

import attrs

from konductor_sdk._kernel.errors import KonductorError

__all__ = ["Fence", "FencedOut", "FencingToken"]


@final
@attrs.frozen
class FencingToken:
    """What a holder presents to a resource it writes to.

    Attributes:
        resource: which primitive granted it: ``"<Kind>/<namespace>/<name>@<uid>"``. The uid
            makes a deleted and recreated object (whose tokens start again) a different
            resource.
        slots: the units this grant holds (``(0,)`` for a Mutex, a Lease or a writer).
        value: the token; strictly increasing over all grants of ``resource``.
    """

    resource: str
    slots: tuple[int, ...] = attrs.field(validator=attrs.validators.min_len(1))
    value: int

    def __int__(self) -> int:
        return self.value


@final
class FencedOut(KonductorError):
    """A write presented a token older than one the resource already accepted.

    Attributes:
        token: the token presented.
        slot: a slot on which a newer token was seen.
        newer: that newer token.
    """

    def __init__(self, token: FencingToken, slot: int, newer: int) -> None:
        super().__init__(
            f"{token.resource}: token {token.value} on slot {slot} is stale; "
            f"token {newer} was already accepted there"
        )
        self.token = token
        self.slot = slot
        self.newer = newer


@final
class Fence:
    """Accepts writes only from the newest grant of each slot of each resource.

    Args:
        state: a :meth:`snapshot` to start from (e.g. loaded from disk).
    """

    def __init__(self, state: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._lock = threading.Lock()
        self._highest: dict[tuple[str, int], int] = {}
        for resource, slots in (state or {}).items():
            for slot, value in slots.items():
                self._highest[(resource, int(slot))] = int(value)

    def __repr__(self) -> str:
        return f"<Fence {len(self._highest)} slots>"

    def admit(self, token: FencingToken) -> None:
        """Accept a write under ``token`` and remember it, or refuse it.

        Equal tokens are accepted (the same holder writing again).

        Raises:
            FencedOut: some slot of the token has seen a higher token.
        """
        with self._lock:
            self._check(token)
            for slot in token.slots:
                self._highest[(token.resource, slot)] = token.value

    def admits(self, token: FencingToken) -> bool:
        """Whether :meth:`admit` would accept ``token`` (remembers nothing)."""
        with self._lock:
            try:
                self._check(token)
            except FencedOut:
                return False
            return True

    def highest(self, resource: str, slot: int = 0) -> int | None:
        """The highest token accepted on ``slot`` of ``resource``, if any."""
        with self._lock:
            return self._highest.get((resource, slot))

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The fence's state as JSON-ready data (``{resource: {slot: token}}``)."""
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (resource, slot), value in self._highest.items():
                out.setdefault(resource, {})[str(slot)] = value
            return out

    def _check(self, token: FencingToken) -> None:
        for slot in token.slots:
            newer = self._highest.get((token.resource, slot))
            if newer is not None and newer > token.value:
                raise FencedOut(token, slot, newer)

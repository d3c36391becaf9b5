"""Arrival claims of a Barrier: who arrived, and whose session keeps them alive.

The barrier object counts parties; the names and the liveness are in **arrival claims**,
one per process batch (``spec.generation``, ``spec.firstIndex``, ``spec.parties`` in index
order, ``spec.session``), created right after the arrival write and never changed. They
serve three readers:

* the operator: when a session dies it withdraws the index ranges of that session's claims
  from the waiting generation (``barrier.drop_sessions``);
* :class:`Roster`: each waiting process watches the barrier's claims and remembers the
  party names of the current and the previous generation, so that a process failing a
  generation on timeout can name the parties that are missing, also those whose process
  died and whose claim the operator already deleted;
* ``Barrier.status()``: who arrived in the current generation, and at which index.

A claim is named after the barrier's uid, the generation and its first index, so creating
it again after a lost answer finds the one that exists. A batch of more parties than a
claim may list is split over several claims.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, final

import attrs

from konductor_sdk._kernel.claims import create_claim, delete_claim, target_selector
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import AlreadyExistsError, APIError
from konductor_sdk._kernel.objects import BARRIER, CLAIM, KObject
from konductor_sdk._kernel.sessions import Session
from konductor_sdk._machines import barrier_ranges as ranges

log = logging.getLogger("konductor_sdk.barrier")

PARTIES_PER_CLAIM: Final = 1024
"""``spec.parties`` of a Claim holds at most this many names (crds/claim.yaml)."""


def claim_name(barrier: str, uid: str, generation: int, first_index: int) -> str:
    """The arrival claim of the batch starting at ``first_index`` of ``generation``."""
    return f"{barrier[:200]}-{uid[:8]}-g{generation}-i{first_index}"


@attrs.frozen
class ArrivalClaim:
    """One arrival claim as read back: its parties are ``firstIndex + i``."""

    name: str
    generation: int
    first_index: int
    parties: tuple[str, ...]
    session: str
    holder: str
    created: str

    @classmethod
    def of(cls, obj: KObject) -> ArrivalClaim | None:
        spec = obj.spec
        generation, first = spec.get("generation"), spec.get("firstIndex")
        parties = spec.get("parties")
        if not isinstance(generation, int) or not isinstance(first, int):
            return None
        if not isinstance(parties, list):
            return None
        return cls(
            name=obj.name,
            generation=generation,
            first_index=first,
            parties=tuple(str(p) for p in parties),
            session=str(spec.get("session", "")),
            holder=str(spec.get("holder", "")),
            created=str(obj.metadata.get("creationTimestamp", "")),
        )


async def create_arrival_claims(
    client: Client,
    session: Session,
    barrier: str,
    uid: str,
    generation: int,
    first_index: int,
    parties: Sequence[str],
) -> list[KObject]:
    """Create the claims of one arrival batch (idempotent: an existing one is kept)."""
    made: list[KObject] = []
    for offset in range(0, len(parties), PARTIES_PER_CLAIM):
        chunk = list(parties[offset : offset + PARTIES_PER_CLAIM])
        name = claim_name(barrier, uid, generation, first_index + offset)
        fields = {
            "generation": generation,
            "firstIndex": first_index + offset,
            "parties": chunk,
            "ttlSeconds": session.ttl,
        }
        try:
            made.append(
                await create_claim(client, session, BARRIER, barrier, fields, claim_name=name)
            )
        except AlreadyExistsError:
            made.append(await client.store.get(CLAIM, client.namespace, name))
    return made


async def delete_arrival_claims(client: Client, claims: Iterable[KObject]) -> None:
    """Delete claims (each exactly that object); failures are left to the operator."""
    for claim in claims:
        try:
            await delete_claim(client, claim)
        except APIError as exc:
            log.debug(
                "could not delete arrival claim %s (its session ends it): %s", claim.name, exc
            )


async def list_arrival_claims(client: Client, namespace: str, barrier: str) -> list[ArrivalClaim]:
    """The barrier's arrival claims now (one LIST, field-selected)."""
    listed = await client.store.list(
        CLAIM, namespace, field_selector=target_selector(BARRIER, barrier)
    )
    return [c for c in (ArrivalClaim.of(o) for o in listed.items) if c is not None]


@final
class Roster:
    """The party names this process has seen in one barrier's arrival claims.

    Fed by the claims watch while the process waits at the barrier. Claims are remembered
    after they are deleted (a dead process's claim is exactly the one that names a missing
    party), for the current and the previous generation only.
    """

    def __init__(self) -> None:
        self._claims: dict[str, ArrivalClaim] = {}
        self._live: set[str] = set()
        self._newest = 0

    def __repr__(self) -> str:
        return f"<Roster claims={len(self._claims)} live={len(self._live)}>"

    def on_event(self, etype: str, obj: KObject) -> None:
        """A watch listener: remember every arrival claim seen."""
        claim = ArrivalClaim.of(obj)
        if claim is None:
            return
        if etype == "DELETED" or obj.deleting:
            self._live.discard(claim.name)
        else:
            self._live.add(claim.name)
        self._remember(claim)

    def _remember(self, claim: ArrivalClaim) -> None:
        self._claims[claim.name] = claim
        if claim.generation > self._newest:
            # A new generation: forget those before the previous one (once per generation,
            # so following N claims costs O(N), not O(N^2)).
            self._newest = claim.generation
            for name in [n for n, c in self._claims.items() if c.generation < self._newest - 1]:
                del self._claims[name]
                self._live.discard(name)

    def add(self, claims: Iterable[ArrivalClaim | None]) -> None:
        """Remember claims read otherwise (a LIST, this process's own)."""
        for claim in claims:
            if claim is not None:
                self._remember(claim)

    def _by_index(self, generation: int) -> dict[int, str]:
        out: dict[int, str] = {}
        for claim in self._claims.values():
            if claim.generation == generation:
                for offset, party in enumerate(claim.parties):
                    out[claim.first_index + offset] = party
        return out

    def arrived(self, status: Mapping[str, Any], generation: int) -> list[str]:
        """Names counted in ``generation`` (by index, departed ones left out), as known."""
        departed = _departed(status, generation)
        return [
            name
            for index, name in sorted(self._by_index(generation).items())
            if not ranges.contains(departed, index)
        ]

    def missing(self, status: Mapping[str, Any], generation: int) -> list[str]:
        """Names known to belong that are not counted in ``generation``: the previous
        generation's parties, and those that arrived in this one and left or were reaped."""
        departed = _departed(status, generation)
        current = self._by_index(generation)
        here = {name for index, name in current.items() if not ranges.contains(departed, index)}
        known = [name for _, name in sorted(self._by_index(generation - 1).items())]
        known += [name for index, name in sorted(current.items()) if name not in here]
        return [name for name in dict.fromkeys(known) if name not in here]


def _departed(status: Mapping[str, Any], generation: int) -> ranges.Ranges:
    if status.get("generation") == generation:
        return ranges.clean(status.get("departed"))
    previous = status.get("previous") or {}
    if previous.get("generation") == generation:
        return ranges.clean(previous.get("departed"))
    return []

"""Helpers for the semaphore family's integration tests: waiting on the object's watch and
on its queue of claims, and an independent observer of every version the server stored."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import anyio

from konductor_sdk import Client
from konductor_sdk._kernel.claims import order_key, target_selector
from konductor_sdk._kernel.objects import CLAIM, SEMAPHORE, KObject, ResourceKind

Pred = Callable[[KObject], bool]


async def until(
    client: Client, name: str, pred: Pred, *, kind: ResourceKind = SEMAPHORE, seconds: float = 60
) -> KObject:
    """Wait (on ``client``'s shared watch) until the object satisfies ``pred``."""
    watch = await client.watch(kind, client.namespace)
    with anyio.fail_after(seconds):
        while True:
            changed = watch.next_change(name)
            obj = watch.get(name)
            if obj is not None and pred(obj):
                return obj
            await changed.wait()


async def until_queued(
    client: Client,
    name: str,
    pred: Callable[[list[KObject]], bool],
    *,
    kind: ResourceKind = SEMAPHORE,
    seconds: float = 60,
) -> list[KObject]:
    """Wait until the object's queue (its claims, in service order) satisfies ``pred``."""
    async with client._watching(
        CLAIM, client.namespace, field_selector=target_selector(kind, name)
    ) as watch:
        claims: list[KObject] = []
        try:
            with anyio.fail_after(seconds):
                while True:
                    changed = watch.next_any_change()
                    claims = sorted((c for c in watch.objects() if not c.deleting), key=order_key)
                    if pred(claims):
                        return claims
                    await changed.wait()
        except TimeoutError:
            seen = [(c.name, c.spec.get("holder"), c.spec.get("session")) for c in claims]
            raise TimeoutError(f"the queue of {name} after {seconds} s: {seen}") from None


def holders(obj: KObject) -> dict[str, Any]:
    return dict(obj.status.get("holders") or {})


def holder_ids(obj: KObject) -> set[str]:
    return {e["holder"] for e in holders(obj).values()}


def claim_holders(claims: list[KObject]) -> list[str]:
    return [str(c.spec.get("holder")) for c in claims]


def granted_claims(obj: KObject) -> set[str]:
    return {e["claim"] for e in holders(obj).values() if e.get("claim")}


def waiting_holders(obj: KObject | None, claims: list[KObject]) -> list[str]:
    """Holder ids of the claims not granted yet, in service order."""
    done = granted_claims(obj) if obj is not None else set()
    return [str(c.spec.get("holder")) for c in claims if c.name not in done]


class Observer:
    """Every version of one object the server stored, checked as it arrives (a raw watch,
    outside the SDK): grants never overlap a slot, regular grants never exceed the limit,
    the fencing counter never goes down, every slot's grants get growing tokens."""

    def __init__(self, client: Client, name: str, *, kind: ResourceKind = SEMAPHORE) -> None:
        self.client = client
        self.name = name
        self.kind = kind
        self.versions = 0
        self.violations: list[str] = []
        self.grants: list[tuple[int, dict[str, Any]]] = []
        """(resourceVersion, entry) of every grant, when first seen."""
        self.most_units = 0
        self._seen: set[int] = set()
        self._slot_token: dict[int, int] = {}
        self._last_token = 0
        self.last_rv = 0
        self._changed = anyio.Event()

    async def caught_up(self, rv: str) -> None:
        """Wait until the observer has seen version ``rv`` (or a later one)."""
        while self.last_rv < int(rv):
            await self._changed.wait()

    async def run(self, since: str, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch from ``since`` until cancelled (a watch from a resourceVersion replays every
        version after it, so starting late misses nothing)."""
        task_status.started()
        while True:
            async for event in self.client.store.watch(
                self.kind, self.client.namespace, resource_version=since
            ):
                since = event.object.resource_version
                if event.type in ("ADDED", "MODIFIED") and event.object.name == self.name:
                    self.check(event.object)

    def check(self, obj: KObject) -> None:
        self.versions += 1
        self.last_rv = max(self.last_rv, int(obj.resource_version))
        self._changed.set()
        self._changed = anyio.Event()
        st = obj.status
        spec = obj.spec
        limit = spec.get("permits", spec.get("maxReaders", 1))
        size = limit + spec.get("burst", 0)
        entries = holders(obj)
        token = st.get("fencingToken", 0)
        if token < self._last_token:
            self.violations.append(f"rv {obj.resource_version}: fencing token went down")
        self._last_token = max(self._last_token, token)
        spans = sorted((int(k), int(k) + e["weight"]) for k, e in entries.items())
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            if b0 < a1:
                self.violations.append(f"rv {obj.resource_version}: slots overlap at {b0}")
        regular = sum(e["weight"] for e in entries.values() if not e.get("burst"))
        total = sum(e["weight"] for e in entries.values())
        self.most_units = max(self.most_units, total)
        new = [(k, e) for k, e in entries.items() if e["token"] not in self._seen]
        if new and (regular > limit or total > size):
            self.violations.append(f"rv {obj.resource_version}: {regular}/{total} over the limit")
        for k, e in sorted(new, key=lambda kv: kv[1]["token"]):
            self._seen.add(e["token"])
            self.grants.append((int(obj.resource_version), dict(e, slot=int(k))))
            for s in range(int(k), int(k) + e["weight"]):
                if e["token"] <= self._slot_token.get(s, 0):
                    self.violations.append(f"slot {s}: token {e['token']} not above the last")
                self._slot_token[s] = e["token"]


def fitting_prefix(
    permits: int, held: dict[str, tuple[int, int]], queue: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    """The fairness rule restated over a list of booleans (no burst): ``held`` maps a key
    to (first slot, weight); ``queue`` is (id, weight) in service order. Returns the
    (id, first slot) of the requests granted now: best fit, the head blocks the rest."""
    taken = [False] * permits
    used = 0
    for slot, weight in held.values():
        for s in range(slot, min(slot + weight, permits)):
            taken[s] = True
        used += weight

    def best_fit(w: int) -> int | None:
        runs, start = [], None
        for i in range(permits + 1):
            free = i < permits and not taken[i]
            if free and start is None:
                start = i
            if not free and start is not None:
                runs.append((i - start, start))
                start = None
        fits = sorted(r for r in runs if r[0] >= w)
        return fits[0][1] if fits else None

    out = []
    for rid, weight in queue:
        if weight > permits:
            continue
        slot = best_fit(weight) if used + weight <= permits else None
        if slot is None:
            break
        for s in range(slot, slot + weight):
            taken[s] = True
        used += weight
        out.append((rid, slot))
    return out

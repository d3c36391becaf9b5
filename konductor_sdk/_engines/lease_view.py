"""One client's view of one lease: the object, its candidates, and whom to wake.

Every candidate of a lease in one process shares a :class:`LeaseView`. It is fed by two
shared watches (the Lease objects of the namespace, and the lease's Claims, field-selected)
and keeps what the pure judgment (:func:`konductor_sdk._machines.lease.judge`) needs beyond
the object:

* **expiry on this process's clock**: the holder entry's ``(holder, token, renewCount)``
  marker, and when it was first seen (:class:`~konductor_sdk._kernel.entries.ExpiryTracker`),
  recorded as the watch delivers each version, not when some waiter looks;
* **since when the lease is free** in its current state (no holder, this fencing token);
* **the line**: the claims in service order, minus the ones *passed over*. A grant made for
  a claim (the entry names it) shows every claim that was ahead of it had its turn and did
  not take it (its process is dead, or it was served before): later handoffs do not wait for
  them again. Claims of this process are never passed over here: they are alive.

Only the candidate that can act is woken: the first local candidate in line (when the
lease changes, the line changes, or its own time comes), and a candidate whose own claim
appeared or vanished. A thousand candidates in one process cost one wakeup per change.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Final, final

import anyio

from konductor_sdk._kernel.batching import PerClient
from konductor_sdk._kernel.claims import ClaimQueue, OrderKey, order_key
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._kernel.watch import KindWatch, rv_int
from konductor_sdk._machines import lease as state

REMEMBERED_CLAIMS: Final = 256
"""How many removed claims' places a view remembers (to place a grant's claim that was
deleted before the grant's own event arrived), and how many served claims not seen yet."""


@final
class Ticket:
    """A local candidate's place in the view: its claim (once created) and its wakeup."""

    def __init__(self, view: LeaseView) -> None:
        self._view = view
        self.claim: KObject | None = None
        self.key: OrderKey | None = None
        self._event = anyio.Event()

    def __repr__(self) -> str:
        return f"<Ticket {self.claim.name if self.claim is not None else '-'}>"

    def wake(self) -> None:
        self._event.set()

    async def wait_for(self, seconds: float) -> None:
        """Until woken (or ``seconds`` pass); a wakeup that came before counts."""
        with anyio.move_on_after(max(0.0, seconds)):
            await self._event.wait()
        self._event = anyio.Event()


@final
class LeaseView:
    """What this client knows about lease ``namespace/name`` (see the module docstring)."""

    def __init__(
        self, client: Client, namespace: str, name: str, watch: KindWatch, queue: ClaimQueue
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.watch = watch
        self.queue = queue
        self.users = 0
        self.tracker = ExpiryTracker(client.clock)
        self._uid = ""
        self._free: tuple[Hashable, float] | None = None
        self._passed_over: set[str] = set()
        # Places as first seen: a DELETED event carries the deletion's resourceVersion,
        # not the claim's place in line.
        self._places: dict[str, OrderKey] = {c.name: order_key(c) for c in queue.ordered()}
        self._removed: OrderedDict[str, OrderKey] = OrderedDict()
        self._served_unseen: OrderedDict[str, OrderKey] = OrderedDict()
        self._tickets: set[Ticket] = set()
        self._by_claim: dict[str, Ticket] = {}
        self._line: list[tuple[OrderKey, Ticket]] = []  # local tickets with a seen claim
        self.recreate_after: float | None = None
        self._remove_listeners = [
            watch.add_listener(self._on_lease),
            queue.watch.add_listener(self._on_claim),
        ]
        current = watch.get(name, namespace)
        if current is not None:
            self._observe(current)

    def __repr__(self) -> str:
        return (
            f"<LeaseView {self.namespace}/{self.name} claims={len(self.queue)} "
            f"local={len(self._tickets)} passed_over={len(self._passed_over)}>"
        )

    def close(self) -> None:
        for remove in self._remove_listeners:
            with contextlib.suppress(ValueError):
                remove()
        self._remove_listeners = []

    # -- what the object says ---------------------------------------------------------------

    def object(self) -> KObject | None:
        return self.watch.get(self.name, self.namespace)

    def feed(self, obj: KObject) -> None:
        """An object this process wrote or read itself (the watch delivers it later)."""
        self.watch.observe(obj)
        self._observe(obj)

    def _on_lease(self, etype: str, obj: KObject) -> None:
        if obj.name != self.name or obj.namespace != self.namespace:
            return
        if etype == "DELETED":
            current = state.holder_entry(obj.status)
            if current is not None:
                # Its holder may not have noticed yet: nobody re-creates the object (tokens
                # would start again) before that holder's entry would have expired.
                at = self.tracker.expires_at(current[0])
                if at is not None and at > self.client.clock.monotonic():
                    self.recreate_after = at
            self._uid = ""
            self._free = None
            self.tracker.retain(())
            self._wake_all()
            return
        self._observe(obj)
        self._wake_first()

    def _observe(self, obj: KObject) -> None:
        now = self.client.clock.monotonic()
        if obj.uid != self._uid:
            if self._uid:
                self._wake_all()
            self._uid = obj.uid
            self.tracker.retain(())
            self._free = None
        current = state.holder_entry(obj.status)
        if current is None:
            self.tracker.retain(())
            marker = ("free", obj.status.get("fencingToken", 0))
            if self._free is None or self._free[0] != marker:
                self._free = (marker, now)
            return
        key, entry = current
        self._free = None
        mark = (entry.get("holder"), entry.get("token"), entry.get("renewCount"))
        ttl = entry.get("ttlSeconds", state.DEFAULT_TTL_SECONDS)
        self.tracker.observe(key, mark, float(ttl) if isinstance(ttl, int | float) else 15.0)
        self.tracker.retain((key,))
        claim = entry.get("claim")
        if isinstance(claim, str) and claim and claim not in self._passed_over:
            self._pass_over_ahead_of(claim)

    def _pass_over_ahead_of(self, claim: str) -> None:
        key = self._places.get(claim)
        if key is not None:
            self._passed_over.add(claim)  # served: whatever is left of it is not a candidate
        else:
            key = self._removed.get(claim)
            if key is None:
                # Not seen here yet (this watch lags): pass it over when it arrives.
                _remember(self._served_unseen, claim, (0, 0, claim))
                return
        step = self.queue.iter_ordered()
        while (claim_obj := step()) is not None and self._place_of(claim_obj) < key:
            if claim_obj.name not in self._by_claim:  # ours are alive
                self._passed_over.add(claim_obj.name)

    def _place_of(self, claim: KObject) -> OrderKey:
        return self._places.get(claim.name) or order_key(claim)

    def _on_claim(self, etype: str, obj: KObject) -> None:
        name = obj.name
        if etype == "DELETED" or obj.deleting:
            self._passed_over.discard(name)
            place = self._places.pop(name, None)
            if place is not None:
                _remember(self._removed, name, place)
        else:
            self._places.setdefault(name, order_key(obj))
            if self._served_unseen.pop(name, None) is not None:
                self._passed_over.add(name)
        ticket = self._by_claim.get(name)
        if ticket is not None:
            self._place(ticket)
            ticket.wake()
        self._wake_first()

    # -- the line ---------------------------------------------------------------------------

    def ahead(self, ticket: Ticket | None, priority: int) -> int:
        """Live candidates ahead of ``ticket`` (or, for a caller without a claim, of a claim
        of ``priority`` created now)."""
        if ticket is not None and ticket.key is not None:
            position = self.queue.position(ticket.key[2])
            if position is None:
                return 0
            skipped = sum(
                1
                for name in self._passed_over
                if (place := self._places.get(name)) is not None and place < ticket.key
            )
            return position - skipped
        count = 0
        for claim in self._claims():
            if self._place_of(claim)[0] > -priority:
                break
            if claim.name not in self._passed_over:
                count += 1
        return count

    def _claims(self) -> Iterator[KObject]:
        step = self.queue.iter_ordered()
        while (claim := step()) is not None:
            yield claim

    def observation(self, ticket: Ticket | None, priority: int, user: str) -> state.Observation:
        now = self.client.clock.monotonic()
        obj = self.object()
        current = state.holder_entry(obj.status) if obj is not None else None
        return state.Observation(
            now=now,
            holder_expires_at=self.tracker.expires_at(current[0]) if current else None,
            free_since=self._free[1] if self._free is not None else None,
            may_remove_holder=current is not None and current[1].get("creator") == user,
            ahead=self.ahead(ticket, priority),
        )

    # -- local candidates -------------------------------------------------------------------

    def join(self) -> Ticket:
        ticket = Ticket(self)
        self._tickets.add(ticket)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        self._tickets.discard(ticket)
        self.set_claim(ticket, None)
        self._wake_first()

    def set_claim(self, ticket: Ticket, claim: KObject | None) -> None:
        self._unplace(ticket)
        if ticket.claim is not None and self._by_claim.get(ticket.claim.name) is ticket:
            del self._by_claim[ticket.claim.name]
        ticket.claim = claim
        if claim is not None:
            self._by_claim[claim.name] = ticket
        self._place(ticket)

    def seen(self, ticket: Ticket) -> bool:
        """Whether the watch delivered the ticket's claim (so every claim before it too)."""
        return ticket.key is not None

    def _place(self, ticket: Ticket) -> None:
        claim = ticket.claim
        queued = self.queue.get(claim.name) if claim is not None else None
        if queued is None or (claim is not None and queued.uid != claim.uid):
            self._unplace(ticket)
            return
        if ticket.key is None:
            ticket.key = self._place_of(queued)
            bisect.insort(self._line, (ticket.key, ticket), key=lambda kt: kt[0])

    def _unplace(self, ticket: Ticket) -> None:
        if ticket.key is not None:
            index = bisect.bisect_left(self._line, ticket.key, key=lambda kt: kt[0])
            if index < len(self._line) and self._line[index][1] is ticket:
                del self._line[index]
            ticket.key = None

    def vanished(self, ticket: Ticket) -> bool:
        """Whether the ticket's claim was seen and is gone (reaped, deleted by an admin)."""
        return ticket.claim is not None and ticket.key is None and self._was_seen(ticket)

    def _was_seen(self, ticket: Ticket) -> bool:
        claim = ticket.claim
        if claim is None:
            return False
        if claim.name in self._removed:
            return True
        # Created before the watch's version: it would be in the queue by now.
        return 0 <= rv_int(claim.resource_version) <= rv_int(self.queue.watch.resource_version)

    def _wake_first(self) -> None:
        if self._line:
            self._line[0][1].wake()

    def _wake_all(self) -> None:
        for ticket in self._tickets:
            ticket.wake()

    def newer_than(self, obj: KObject) -> bool:
        """Whether the watch has delivered a version newer than ``obj`` (or its deletion)."""
        cached = self.object()
        return cached is None or rv_int(cached.resource_version) > rv_int(obj.resource_version)


def _remember(memory: OrderedDict[str, OrderKey], name: str, place: OrderKey) -> None:
    memory[name] = place
    while len(memory) > REMEMBERED_CLAIMS:
        memory.popitem(last=False)


_VIEWS = PerClient[tuple[str, str], LeaseView]()


@contextlib.contextmanager
def lease_view(
    client: Client, namespace: str, name: str, watch: KindWatch, queue: ClaimQueue
) -> Iterator[LeaseView]:
    """The client's shared :class:`LeaseView` of ``namespace/name`` while inside the block.

    The caller keeps ``watch`` and the claim ``queue`` open meanwhile (a view made on a
    queue that has since been replaced is made anew).
    """
    key = (namespace, name)
    view = _VIEWS.get(client, key, lambda: LeaseView(client, namespace, name, watch, queue))
    if view.queue is not queue or view.watch is not watch:
        view.close()
        _VIEWS.discard(client, key, view)
        view = _VIEWS.get(client, key, lambda: LeaseView(client, namespace, name, watch, queue))
    view.users += 1
    try:
        yield view
    finally:
        view.users -= 1
        if view.users == 0:
            view.close()
            _VIEWS.discard(client, key, view)

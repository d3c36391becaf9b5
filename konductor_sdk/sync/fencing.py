"""Blocking twins of :mod:`konductor_sdk.fencing` (generated, do not edit).

Fencing tokens, and the guard a downstream resource uses to honour them.

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

    with Semaphore("gpu-pool", permits=3) as permit:
        fence.admit(permit.fencing)          # raises FencedOut for a stale holder
        write_to_the_resource(...)

The check and the write must be atomic at the resource (do both under one lock, or as one
conditional database update keyed by ``(token.resource, slot)``): :class:`Fence` is the
in-process version of that rule, thread-safe, with :meth:`Fence.snapshot` to persist it.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from konductor_sdk.fencing import Fence as Fence
from konductor_sdk.fencing import FencedOut as FencedOut
from konductor_sdk.fencing import FencingToken as FencingToken

__all__ = [
    "Fence",
    "FencedOut",
    "FencingToken",
]

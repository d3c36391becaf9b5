"""Issue 13 (3): per-slot fencing for a counting semaphore, with a resource that fences.

Three holders of a ``permits=3`` semaphore are valid at once, so "refuse anything below the
highest token seen" would refuse most of their writes. A grant occupies slots, and
:class:`~konductor_sdk.Fence` applies the rule per slot: every write a holder makes while
it holds its grant is accepted, and every write made after its grant ended is refused as
soon as one of its slots was granted again."""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import pytest

from konductor_sdk import Client, PermitLost
from konductor_sdk.fencing import Fence, FencedOut, FencingToken
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


async def test_concurrent_holders_are_never_fenced_and_stale_ones_always_are(
    client: Client, make_client: Callable[..., Client]
) -> None:
    await Semaphore("fenced", permits=3, client=client).create()
    fence = Fence()
    refused_legit: list[FencedOut] = []
    ended: list[FencingToken] = []
    log: list[int] = []  # every token presented, in order (to replay a global counter)

    async def worker(i: int) -> None:
        rng = random.Random(i)
        sem = Semaphore("fenced", client=make_client(f"f{i}"))
        for _ in range(6):
            async with sem.hold(weight=rng.choice((1, 1, 2))) as p:
                for _ in range(3):
                    log.append(p.token)
                    try:
                        fence.admit(p.fencing)
                    except FencedOut as exc:
                        refused_legit.append(exc)
                    await anyio.sleep(rng.uniform(0.005, 0.03))
            ended.append(p.fencing)

    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            for i in range(9):
                tg.start_soon(worker, i)
    assert refused_legit == []
    # A stale holder writing now: refused iff one of its slots was granted again since.
    regranted = [
        t for t in ended if any((fence.highest(t.resource, s) or 0) > t.value for s in t.slots)
    ]
    refused_stale = [t for t in ended if not fence.admits(t)]
    assert refused_stale == regranted
    assert len(regranted) >= len(ended) - 3  # all but the last holders of the 3 slots
    # The old rule (one counter per object) would have refused legitimate writes here.
    highest, refused_by_one_counter = 0, 0
    for token in log:
        refused_by_one_counter += token < highest
        highest = max(highest, token)
    assert refused_by_one_counter > 0


async def test_a_holder_whose_grant_was_removed_is_fenced_once_its_slot_is_regranted(
    client: Client, make_client: Callable[..., Client]
) -> None:
    sem = Semaphore("victim", permits=3, client=client)
    await sem.create()
    fence = Fence()
    victim = await Semaphore("victim", client=make_client("victim")).acquire()
    others = [await sem.acquire(), await sem.acquire()]
    fence.admit(victim.fencing)
    for p in others:
        fence.admit(p.fencing)
    # The victim's grant ends under it (its session was reaped, or an admin removed it)...
    assert await sem.force_release(victim.key) == (victim.key,)
    with anyio.fail_after(60):
        await victim.wait_lost()
    # ...and before anyone else got its slot, a late write of its own is still accepted
    # (nobody else can be using those units): fencing is about overlap, not about time.
    assert fence.admits(victim.fencing)
    successor = await sem.acquire()
    assert successor.slots == victim.slots
    fence.admit(successor.fencing)
    with pytest.raises(FencedOut):
        fence.admit(victim.fencing)
    for p in others:
        fence.admit(p.fencing)  # the two untouched holders are never affected
    for p in [*others, successor]:
        await p.release()

    async def removed_while_held() -> None:
        async with Semaphore("victim", client=make_client("late")).hold() as late:
            await sem.force_release(late.key)
            await anyio.sleep_forever()  # cancelled: the grant is gone

    with pytest.raises(PermitLost):
        await removed_while_held()

"""Priority: a waiting candidate that outranks the holder gets the lease at once, by a
graceful handoff (never by overlapping validity); a free lease goes to the highest priority.

TTLs are an hour long: anything that happens within these tests cannot be an expiry.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from konductor_sdk import Client, LeadershipLost
from konductor_sdk._kernel.objects import LEASE
from konductor_sdk.lease import HeldLease, Lease
from tests.integration._lease_helpers import wait_for, wait_for_candidates

MakeClient = Callable[..., Client]
HOUR = 3600


@pytest.mark.anyio
async def test_higher_priority_candidate_takes_over_by_handoff(make_client: MakeClient) -> None:
    low, high = make_client("low"), make_client("high")
    events: list[str] = []
    preferred: list[str] = []
    watch = await low.watch(LEASE, low.namespace)
    remove = watch.add_listener(
        lambda _, o: (
            preferred.append(o.status.get("preferredHolder", "")) if o.name == "prio" else None
        )
    )
    got: list[HeldLease] = []

    async def hold_low() -> None:
        try:
            async with Lease("prio", ttl=HOUR, client=low, priority=1) as held:
                events.append(f"low holds {held.token}")
                try:
                    await anyio.sleep_forever()
                finally:
                    events.append("low stopped")
        except LeadershipLost as exc:
            events.append(f"low raised LeadershipLost: {exc}")

    async def want_high() -> None:
        got.append(await Lease("prio", ttl=HOUR, client=high, priority=5).acquire())
        events.append(f"high holds {got[0].token}")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_low)
            await wait_for(low, "prio", lambda o: o.status.get("holder") == "low")
            tg.start_soon(want_high)
    remove()
    # The low holder's body had stopped before the high candidate was granted.
    assert events[:2] == ["low holds 1", "low stopped"]
    assert events[2].startswith("low raised LeadershipLost: ")
    assert "yielding to higher-priority candidate high" in events[2]
    assert events[3:] == ["high holds 2"]
    assert "high" in preferred  # the signal the holder acted on
    status = await Lease("prio", client=high).status()
    assert (status.holder, status.preferred_holder, status.candidates) == ("high", None, ())
    assert status.token == 2
    await got[0].release()


@pytest.mark.anyio
async def test_lower_priority_candidate_waits_politely(make_client: MakeClient) -> None:
    boss, intern = make_client("boss"), make_client("intern")
    held = await Lease("polite", ttl=HOUR, client=boss, priority=5).acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(Lease("polite", ttl=HOUR, client=intern, priority=2).acquire)
        await wait_for_candidates(boss, "polite", lambda hs: hs == ["intern"])
        obj = await boss.store.get(LEASE, boss.namespace, "polite")
        assert obj.status["preferredHolder"] == ""
        assert not held.lost
        tg.cancel_scope.cancel()
    await held.release()


@pytest.mark.anyio
async def test_free_lease_goes_to_the_highest_priority_waiter(make_client: MakeClient) -> None:
    owner = make_client("owner")
    held = await Lease("queue", ttl=HOUR, client=owner, priority=9).acquire()
    order: list[str] = []

    async def want(c: Client, priority: int) -> None:
        h = await Lease("queue", ttl=HOUR, client=c, priority=priority).acquire()
        order.append(c.identity.holder)
        await h.release()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for name, priority in (("p1", 1), ("p3", 3), ("p2", 2)):
                tg.start_soon(want, make_client(name), priority)
            await wait_for_candidates(owner, "queue", lambda hs: hs == ["p3", "p2", "p1"])
            await held.release()
    assert order == ["p3", "p2", "p1"]

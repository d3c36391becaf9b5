"""The line of candidates (Claims) with nobody to clean it up: the operator is not running
in these tests, so a dead process's claim stays, and the protocol must live with it."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from konductor_sdk import Client
from konductor_sdk._kernel.claims import create_claim
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import CLAIM, LEASE, SESSION
from konductor_sdk._kernel.sessions import sessions_of
from konductor_sdk.lease import HeldLease, Lease
from tests.integration._lease_helpers import observed, wait_for_candidates

MakeClient = Callable[..., Client]
TTL = 2


async def ghost_claim(make_client: MakeClient, name: str) -> str:
    """The claim of a process that died while waiting: its session is never renewed and,
    with the operator down, nobody deletes either."""
    ghost = make_client("ghost")
    session = await sessions_of(ghost).get(TTL)
    session.holds = 1  # closing the client leaves the session (as a crash would)
    claim = await create_claim(ghost, session, LEASE, name, {"holder": "ghost", "priority": 0})
    await ghost.aclose()
    return claim.name


@pytest.mark.anyio
async def test_a_dead_head_does_not_block_the_lease_and_is_passed_over_afterwards(
    make_client: MakeClient,
) -> None:
    holder, a = make_client("holder"), make_client("a")
    frozen = FakeClock()  # b's clock never moves: b can only go when it is the head
    b = make_client("b", clock=frozen)
    held = await Lease("line", ttl=TTL, client=holder).acquire()
    await ghost_claim(make_client, "line")
    got: dict[str, HeldLease] = {}

    async def want(c: Client) -> None:
        got[c.identity.holder] = await Lease("line", ttl=TTL, client=c).acquire()

    async with observed(holder, "line") as history:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(want, a)
                await wait_for_candidates(holder, "line", lambda hs: hs == ["ghost", "a"])
                tg.start_soon(want, b)
                await wait_for_candidates(holder, "line", lambda hs: hs == ["ghost", "a", "b"])
                await held.release()
                # The ghost is the head and never acts: a (second in line) takes the lease
                # one lease duration later on its (real) clock...
                while "a" not in got:  # noqa: ASYNC110 - the waiter's result has no event
                    await anyio.sleep(0.05)
                assert "b" not in got
                # ...and its grant names its claim, so every observer now passes over the
                # ghost that was ahead of it: b is the head and goes at once, on a clock
                # that never moved.
                await got["a"].release()
    assert got["b"].token == got["a"].token + 1
    assert [h for h, _ in history.grants] == ["holder", "a", "b"]
    assert history.violations == []
    await got["b"].release()


@pytest.mark.anyio
async def test_a_waiter_whose_claim_or_session_vanishes_queues_again(
    client: Client, make_client: MakeClient
) -> None:
    holder, waiter = make_client("holder"), make_client("waiter")
    held = await Lease("vanish", ttl=30, client=holder).acquire()
    lease = Lease("vanish", ttl=30, client=waiter)
    got: list[HeldLease] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:

            async def want() -> None:
                got.append(await lease.acquire())

            tg.start_soon(want)
            await wait_for_candidates(holder, "vanish", lambda hs: hs == ["waiter"])
            ns = client.namespace
            claims = (await client.store.list(CLAIM, ns)).items
            first = next(c for c in claims if c.spec["target"]["name"] == "vanish")
            # An admin (or the operator, wrongly) deletes the claim: the waiter queues again.
            await client.store.delete(CLAIM, ns, first.name)
            await wait_for_candidates(holder, "vanish", lambda hs: hs == ["waiter"])
            # Its session is deleted (reaped): a new session, a new claim.
            session = first.spec["session"]
            await client.store.delete(SESSION, ns, session)
            with anyio.fail_after(30):
                while True:
                    claims = (await client.store.list(CLAIM, ns)).items
                    mine = [c for c in claims if c.spec["target"]["name"] == "vanish"]
                    if mine and mine[0].spec["session"] != session:
                        break
                    await anyio.sleep(0.2)
            await held.release()
    assert got[0].token == 2
    assert got[0].session != session
    await got[0].release()

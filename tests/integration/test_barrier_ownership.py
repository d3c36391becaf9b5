"""Ownership of Barrier and Once state, enforced by the API server (policies/, crds/).

Two minted users bound to ``konductor-user``: alice's arrivals and runs are attacked by
bob with status writes, object writes and deletes; every attempt is refused by the server,
and alice's state is unchanged. What the server cannot judge is pinned by
``test_what_the_server_cannot_judge`` (docs/security.md lists it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _barrier_helpers import until

from konductor_sdk import Client, ForbiddenError, InvalidObjectError
from konductor_sdk._kernel.objects import BARRIER, CLAIM, ONCE, WAITGROUP, KObject
from konductor_sdk.barrier import Barrier
from konductor_sdk.once import Once
from konductor_sdk.testing import ClusterHandle
from konductor_sdk.waitgroup import WaitGroup
from tests.integration._ownership import bind_user

pytestmark = pytest.mark.anyio

REFUSED = (ForbiddenError, InvalidObjectError)


@pytest.fixture
async def users(
    control_plane: ClusterHandle, namespace: str
) -> AsyncIterator[tuple[Client, Client]]:
    alice_cfg: Path = await bind_user(control_plane, namespace, "alice")
    bob_cfg: Path = await bind_user(control_plane, namespace, "bob")
    async with (
        Client(kubeconfig=alice_cfg, namespace=namespace) as alice,
        Client(kubeconfig=bob_cfg, namespace=namespace) as bob,
    ):
        yield alice, bob


async def refused(client: Client, obj: KObject, status: dict[str, Any], match: str) -> None:
    with pytest.raises(REFUSED, match=match):
        await client.store.replace(obj_kind(obj), obj.with_status(status), subresource="status")


def obj_kind(obj: KObject) -> Any:
    return {"Barrier": BARRIER, "Once": ONCE, "WaitGroup": WAITGROUP}[str(obj.raw["kind"])]


async def test_two_users_share_a_barrier_through_the_sdk(users: tuple[Client, Client]) -> None:
    alice, bob = users
    parties = [
        Barrier("shared", expected=3, client=alice, party="a0"),
        Barrier("shared", expected=3, client=alice, party="a1"),
        Barrier("shared", expected=3, client=bob, party="b0"),
    ]
    ranks: list[int] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for party in parties:

                async def wait(p: Barrier = party) -> None:
                    ranks.append(await p.wait())

                tg.start_soon(wait)
    assert sorted(ranks) == [0, 1, 2]
    status = await parties[0].status()
    assert (status.phase, status.arrived) == ("Open", 3)
    assert dict(status.arrived_by) == {"alice": 2, "bob": 1}
    # The next generation, started by bob, counts only bob.
    await parties[2].arrive()
    status = await parties[0].status()
    assert (status.generation, dict(status.arrived_by)) == (2, {"bob": 1})
    assert await parties[2].leave()


async def test_another_user_cannot_forge_remove_rewind_or_exhaust_arrivals(
    users: tuple[Client, Client],
) -> None:
    alice, bob = users
    waiting = [Barrier("guarded", expected=3, client=alice, party=f"a{i}") for i in range(2)]
    for party in waiting:
        await party.arrive()
    await bob.connect()
    ns = bob.namespace
    obj = await bob.store.get(BARRIER, ns, "guarded")
    s = dict(obj.status)
    assert (s["arrived"], s["arrivedBy"]) == (2, {"alice": 2})

    # forge: open it with two of three, or with alice counted three times
    await refused(bob, obj, {**s, "phase": "Open"}, "may become Open only")
    await refused(
        bob,
        obj,
        {**s, "phase": "Open", "arrived": 3, "nextIndex": 3, "arrivedBy": {"alice": 3}},
        "only its own count",
    )
    await refused(
        bob,
        obj,
        {
            **s,
            "recent": [
                *s["recent"],
                {"batch": "x", "generation": 1, "firstIndex": 2, "count": 1, "user": "alice"},
            ],
            "arrived": 3,
            "nextIndex": 3,
            "arrivedBy": {"alice": 2, "bob": 1},
        },
        "records only arrivals of the writer",
    )
    # remove: withdraw one of alice's arrivals, or all of them
    await refused(
        bob,
        obj,
        {**s, "arrived": 1, "arrivedBy": {"alice": 1}, "departed": [[0, 1]]},
        "only its own count",
    )
    await refused(bob, obj, {"generation": 1, "phase": "Waiting"}, "sum of|nextIndex")
    # rewind: skip the waiting generation, or take its arrivals back
    await refused(
        bob,
        obj,
        {**s, "generation": 2, "arrived": 0, "arrivedBy": {}, "nextIndex": 0},
        "only from a concluded",
    )
    await refused(
        bob,
        obj,
        {**s, "nextIndex": 1, "arrived": 1, "arrivedBy": {"alice": 1}},
        "never go down|only its own",
    )
    # fail it: reset (only the creator) or time it out early (only a participant)
    await refused(bob, obj, {**s, "phase": "Failed", "reason": "Reset"}, "may reset it")
    await refused(bob, obj, {**s, "phase": "Failed", "reason": "Timeout"}, "may fail it")
    assert not await _reset_by(bob, "guarded")
    # exhaust the index space of the generation
    await refused(
        bob, obj, {**s, "nextIndex": 2**52, "departed": [[2, 2**52 - 2]]}, "either adds arrivals"
    )
    # object writes and deletes
    claims = (await bob.store.list(CLAIM, ns)).items
    assert claims
    for claim in claims:
        with pytest.raises(REFUSED, match="only its creator"):
            await bob.store.delete(CLAIM, ns, claim.name)
    with pytest.raises(REFUSED, match=r"only its creator|cannot patch"):
        await bob.store.patch(BARRIER, ns, "guarded", {"spec": {"expected": 2}})
    with pytest.raises(REFUSED, match="only its creator"):
        await bob.store.delete(BARRIER, ns, "guarded")

    after = await alice.store.get(BARRIER, ns, "guarded")
    assert after.status == obj.status  # nothing changed
    # alice (the creator) may reset her own barrier
    assert await Barrier("guarded", expected=None, client=alice).reset()
    for party in waiting:
        with pytest.raises(Exception, match="Reset"):
            await party.wait_open()


async def _reset_by(client: Client, name: str) -> bool:
    try:
        return await Barrier(name, expected=None, client=client).reset()
    except ForbiddenError:
        return False


async def test_what_the_server_cannot_judge(users: tuple[Client, Client]) -> None:
    """The gaps docs/security.md lists: a participant may arrive as several parties, and
    may withdraw another's arrival index by paying with its own count."""
    alice, bob = users
    await Barrier("gaps", expected=4, client=alice, party="a0").arrive()
    await bob.connect()
    ns = bob.namespace
    obj = await bob.store.get(BARRIER, ns, "gaps")
    s = dict(obj.status)
    several = {**s, "arrived": 3, "nextIndex": 3, "arrivedBy": {"alice": 1, "bob": 2}}
    obj = await bob.store.replace(BARRIER, obj.with_status(several), subresource="status")
    # bob departs alice's index 0, lowering his own count: the server cannot tell whose
    # index it is (that is in the arrival claims, which a policy cannot read).
    taken = {**obj.status, "arrived": 2, "arrivedBy": {"alice": 1, "bob": 1}, "departed": [[0, 1]]}
    await bob.store.replace(BARRIER, obj.with_status(taken), subresource="status")


async def test_another_user_cannot_take_over_record_or_reset_a_run(
    users: tuple[Client, Client],
) -> None:
    alice, bob = users
    release = anyio.Event()

    async def work() -> str:
        await release.wait()
        return "by alice"

    async with anyio.create_task_group() as tg:
        tg.start_soon(Once("guarded", client=alice).run, work)
        await bob.connect()
        ns = bob.namespace
        obj = await until(bob, ONCE, "guarded", lambda o: o.status.get("phase") == "Running")
        s = dict(obj.status)
        [(key, entry)] = s["holders"].items()
        assert entry["creator"] == "alice"
        mine = {"session": "s-bob", "creator": "bob", "attempt": s["attempts"] + 1}
        # take over, remove, or impersonate the runner
        await refused(
            bob,
            obj,
            {**s, "attempts": s["attempts"] + 1, "holders": {"bob#1": mine}},
            "only the runner's creator",
        )
        await refused(bob, obj, {**s, "phase": "Pending", "holders": {}}, "only the runner's")
        await refused(
            bob, obj, {**s, "holders": {key: {**entry, "creator": "bob"}}}, "only the runner's"
        )
        # record the outcome in alice's place
        await refused(
            bob,
            obj,
            {**s, "phase": "Done", "holders": {}, "result": '"by bob"'},
            "only the runner|only the current runner",
        )
        # rewind or exhaust the attempt counter
        await refused(bob, obj, {**s, "attempts": 0}, "never goes down|attempt")
        await refused(bob, obj, {**s, "attempts": 10**9}, "grows by one")
        with pytest.raises(REFUSED, match="only its creator"):
            await bob.store.delete(ONCE, ns, "guarded")
        release.set()
    done = await until(bob, ONCE, "guarded", lambda o: o.status.get("phase") == "Done")
    await refused(bob, done, {**done.status, "result": '"by bob"'}, "reset or change")
    await refused(bob, done, {"phase": "Pending", "attempts": done.status["attempts"]}, "reset")
    assert not await _once_reset_by(bob, "guarded")
    assert await Once("guarded", client=bob).run(work) == "by alice"
    assert await Once("guarded", client=alice).reset()  # the creator may


async def _once_reset_by(client: Client, name: str) -> bool:
    try:
        return await Once(name, client=client).reset()
    except ForbiddenError:
        return False


async def test_a_waitgroup_is_shared_but_its_epoch_cannot_be_rewound(
    users: tuple[Client, Client],
) -> None:
    alice, bob = users
    await WaitGroup("shared", client=alice).add(2)
    # Unowned by design (like Go's): any participant may add and done.
    assert await WaitGroup("shared", client=bob).done() == 1
    assert await WaitGroup("shared", client=alice).done() == 0
    await bob.connect()
    obj = await bob.store.get(WAITGROUP, bob.namespace, "shared")
    assert obj.status["epoch"] == 1
    await refused(bob, obj, {**obj.status, "epoch": 0}, "never goes down")
    await refused(bob, obj, {**obj.status, "counter": -1}, "counter")

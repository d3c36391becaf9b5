"""Ownership, as two users bound to ``konductor-user`` meet it: bob tries to forge, remove,
impersonate, rewind and exhaust alice's grants on a Semaphore, a Mutex and an RWMutex, by
status writes, object writes and deletes. The API server refuses every attempt, and
alice's permits keep working; an admin (``override``) may still force-release."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import anyio
import pytest

from konductor_sdk import APIError, Client
from konductor_sdk._kernel.objects import CLAIM, MUTEX, RWMUTEX, SEMAPHORE, SESSION, ResourceKind
from konductor_sdk.mutex import Mutex
from konductor_sdk.rwmutex import RWMutex
from konductor_sdk.semaphore import Semaphore
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import bind_user
from tests.integration._semaphore_helpers import until_queued

pytestmark = pytest.mark.anyio


def ops_of(obj: Any, slot: str) -> dict[str, Any]:
    return dict(obj.status["holders"][slot])


async def refused(call: Any, label: str) -> None:
    with pytest.raises(APIError) as info:
        await call
    assert info.value.status in (403, 422), (label, info.value)


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        (SEMAPHORE, lambda c: Semaphore("res", permits=3, client=c)),
        (MUTEX, lambda c: Mutex("res", client=c)),
        (RWMUTEX, lambda c: RWMutex("res", client=c, max_readers=3)),
    ],
    ids=["semaphore", "mutex", "rwmutex"],
)
async def test_another_user_cannot_touch_my_grants(
    control_plane: ClusterHandle,
    namespace: str,
    kind: ResourceKind,
    make: Any,
) -> None:
    alice_cfg: Path = await bind_user(control_plane, namespace, "alice")
    bob_cfg: Path = await bind_user(control_plane, namespace, "bob")
    async with (
        Client(kubeconfig=alice_cfg, namespace=namespace) as alice,
        Client(kubeconfig=bob_cfg, namespace=namespace) as bob,
    ):
        front = make(alice)
        if kind == RWMUTEX:
            permit = await front.acquire("read")
        else:
            permit = await front.acquire()
        await bob.connect()
        obj = await bob.store.get(kind, namespace, "res")
        mine = ops_of(obj, str(permit.slot))
        assert mine["creator"] == "alice"
        token = obj.status["fencingToken"]
        ns = namespace

        def status_patch(ops: list[dict[str, Any]]) -> Any:
            return bob.store.patch(kind, ns, "res", ops, patch_type="json", subresource="status")

        forged = {**mine, "token": token + 1}
        slot = str(permit.slot)
        free = "1" if kind != MUTEX else "0"
        attempts = {
            "remove alice's grant": [
                {"op": "test", "path": f"/status/holders/{slot}/token", "value": permit.token},
                {"op": "remove", "path": f"/status/holders/{slot}"},
            ],
            "mark alice's grant time-bounded": [
                {"op": "add", "path": f"/status/holders/{slot}/ttlSeconds", "value": 1},
                {"op": "add", "path": f"/status/holders/{slot}/renewCount", "value": 0},
            ],
            "add a grant in alice's name": [
                {"op": "test", "path": "/status/fencingToken", "value": token},
                {"op": "add", "path": f"/status/holders/{free}", "value": forged},
                {"op": "add", "path": "/status/fencingToken", "value": token + 1},
            ],
            "add his own grant on alice's slot": [
                {"op": "test", "path": "/status/fencingToken", "value": token},
                {
                    "op": "add",
                    "path": f"/status/holders/{slot}",
                    "value": {**forged, "creator": "bob"},
                },
                {"op": "add", "path": "/status/fencingToken", "value": token + 1},
            ],
            "rewind the fencing counter": [
                {"op": "add", "path": "/status/fencingToken", "value": 0}
            ],
            "remove the fencing counter": [{"op": "remove", "path": "/status/fencingToken"}],
            "exhaust the fencing counter": [
                {"op": "add", "path": "/status/fencingToken", "value": 2**63 - 1}
            ],
            "write an aggregate": [{"op": "add", "path": "/status/phase", "value": "Locked"}],
            "ask alice's grant to yield in alice's name": [
                {
                    "op": "add",
                    "path": "/status/preemptRequests",
                    "value": {str(permit.token): {"creator": "alice", "session": "x"}},
                }
            ],
        }
        for label, ops in attempts.items():
            await refused(status_patch(ops), label)
        # A whole-status PUT without alice's grant.
        body = copy.deepcopy(dict(obj.raw))
        body["status"] = {"fencingToken": token}
        await refused(bob.store.replace(kind, body, subresource="status"), "PUT status")
        # Object writes and deletes: the object is alice's.
        await refused(bob.store.delete(kind, namespace, "res"), "delete the object")
        await refused(
            bob.store.patch(kind, namespace, "res", {"metadata": {"labels": {"x": "y"}}}),
            "label the object",
        )
        # Her session (her grants' liveness) is hers too.
        await refused(bob.store.delete(SESSION, namespace, permit.session), "delete her session")
        # The SDK's force_release as bob: refused by the server, nothing removed.
        with pytest.raises(APIError):
            await make(bob).force_release(permit.key)
        after = await alice.store.get(kind, namespace, "res")
        assert after.status["holders"][slot] == mine
        assert after.status["fencingToken"] == token
        assert not permit.lost
        await permit.release()
        assert not (await alice.store.get(kind, namespace, "res")).status["holders"]


async def test_claims_and_preemption_requests_are_their_creators(
    control_plane: ClusterHandle, namespace: str, client: Client
) -> None:
    alice_cfg = await bind_user(control_plane, namespace, "alice")
    bob_cfg = await bind_user(control_plane, namespace, "bob")
    async with (
        Client(kubeconfig=alice_cfg, namespace=namespace) as alice,
        Client(kubeconfig=bob_cfg, namespace=namespace) as bob,
    ):
        low = await Semaphore("pre", permits=1, client=bob).acquire(preemptible=True)
        async with anyio.create_task_group() as tg:

            async def vip() -> None:
                p = await Semaphore("pre", client=alice).acquire(priority=5)
                await p.release()

            tg.start_soon(vip)
            (claim,) = await until_queued(client, "pre", lambda c: len(c) == 1)
            with anyio.fail_after(60):
                await low.preempt_requested.wait()
            obj = await bob.store.get(SEMAPHORE, namespace, "pre")
            (asked,) = obj.status["preemptRequests"]
            assert obj.status["preemptRequests"][asked]["creator"] == "alice"
            # bob may not delete alice's claim (her place), nor her request.
            await refused(bob.store.delete(CLAIM, namespace, claim.name), "delete her claim")
            await refused(
                bob.store.patch(
                    SEMAPHORE,
                    namespace,
                    "pre",
                    [{"op": "remove", "path": f"/status/preemptRequests/{asked}"}],
                    patch_type="json",
                    subresource="status",
                ),
                "withdraw her request",
            )
            await low.release()  # he yields, as asked
        # An admin may override: force-release anyone's grant.
        held = await Semaphore("pre", client=bob).acquire()
        assert await Semaphore("pre", client=client).force_release(held.key) == (held.key,)


async def test_one_user_write_adds_at_most_64_grants_an_override_write_more(
    control_plane: ClusterHandle, namespace: str, client: Client
) -> None:
    """The distinct-token rule is O(new grants^2), so a user's write is bounded (the SDK
    adds at most 64 per write); a user allowed ``override`` (here the admin) is not."""
    alice_cfg: Path = await bind_user(control_plane, namespace, "alice")
    async with Client(kubeconfig=alice_cfg, namespace=namespace) as alice:
        semaphore = Semaphore("wide", permits=200, client=alice)
        await (await semaphore.acquire()).release()  # (a status with a fencing counter)
        token = (await alice.store.get(SEMAPHORE, namespace, "wide")).status["fencingToken"]

        def grants(first: int, count: int, token: int) -> list[dict[str, Any]]:
            return [
                {"op": "test", "path": "/status/fencingToken", "value": token},
                {
                    "op": "add",
                    "path": "/status/holders",
                    "value": {
                        str(first + i): {
                            "weight": 1,
                            "token": token + 1 + i,
                            "session": "s",
                            "creator": "alice",
                            "holder": "alice",
                        }
                        for i in range(count)
                    },
                },
                {"op": "add", "path": "/status/fencingToken", "value": token + count},
            ]

        def write(who: Client, ops: list[dict[str, Any]]) -> Any:
            return who.store.patch(
                SEMAPHORE, namespace, "wide", ops, patch_type="json", subresource="status"
            )

        with pytest.raises(APIError) as info:
            await write(alice, grants(0, 65, token))
        assert info.value.status == 422
        assert "at most 64 grants" in str(info.value.body), info.value.body
        assert not (await alice.store.get(SEMAPHORE, namespace, "wide")).status.get("holders")
        written = await write(alice, grants(0, 64, token))
        assert len(written.status["holders"]) == 64
        await write(alice, [{"op": "add", "path": "/status/holders", "value": {}}])
        # The admin may write more at once (the creator is alice's: override).
        written = await write(client, grants(0, 65, token + 64))
        assert len(written.status["holders"]) == 65

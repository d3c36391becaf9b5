"""The operator's session reaping against the real API server.

The core controller runs in-process on a fake monotonic clock (so "the TTL passed" is a
step of the test, not a sleep) with rules for a scratch kind whose entries name sessions.
Sessions and claims are the real kinds, under the real admission policies.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from konductor_operator import _core
from konductor_operator._context import OperatorContext
from konductor_operator._core import CoreController
from konductor_sdk import Client, Identity, NotFoundError
from konductor_sdk._kernel.claims import create_claim
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import CLAIM, POD, SEMAPHORE, SESSION, KObject, ResourceKind
from konductor_sdk._kernel.sessions import sessions_of
from konductor_sdk._kernel.waiting import wait_any
from konductor_sdk._machines.rules import KindRules, registered
from konductor_sdk.testing import ClusterHandle
from tests.integration._scratch_crd import install_scratch_crd

pytestmark = pytest.mark.anyio

HOLDINGS = ResourceKind("sync.konductor.io", "v1alpha1", "holdings", "Holdings")
RULES = KindRules(kind=HOLDINGS, entry_maps=("holders",), normalize=lambda spec, status: status)


@pytest.fixture(scope="module")
def holdings_crd(control_plane: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> None:
    install_scratch_crd(control_plane, tmp_path_factory.mktemp("crd"), HOLDINGS)


@asynccontextmanager
async def operator(
    kubeconfig: Path,
    namespace: str,
    clock: FakeClock,
    rules: Mapping[str, KindRules] | None = None,
) -> AsyncIterator[CoreController]:
    client = Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("operator"), clock=clock
    )
    await client.connect()
    ctx = OperatorContext.standalone(
        client, (namespace,), logger=logging.getLogger("test.operator")
    )
    core = CoreController(ctx, rules=rules if rules is not None else {"Holdings": RULES})
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(core.run)
            with anyio.fail_after(10):
                await core.ready.wait()
            yield core
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()


async def raw_session(client: Client, ttl: int, pod: dict[str, str] | None = None) -> KObject:
    """A session nobody renews: a client that died right after creating it."""
    spec: dict[str, Any] = {"holder": "dead-process", "ttlSeconds": ttl, "renewCount": 0}
    if pod is not None:
        spec["pod"] = pod
    body = {"metadata": {"generateName": "dead-"}, "spec": spec}
    return await client.store.create(SESSION, client.namespace, body)


async def until(client: Client, check: Callable[[], Any], what: str) -> None:
    """Wait, on watch events, until ``check()`` (fresh reads) holds."""
    watches = [await client.watch(kind, client.namespace) for kind in (HOLDINGS, SESSION, CLAIM)]
    with anyio.fail_after(15):
        while True:
            changed = [w.next_any_change() for w in watches]
            if await check():
                return
            await wait_any(*changed)


async def exists(client: Client, kind: ResourceKind, name: str) -> bool:
    try:
        await client.store.get(kind, client.namespace, name)
    except NotFoundError:
        return False
    return True


async def test_an_expired_session_is_deleted_with_everything_that_names_it(
    holdings_crd: None, make_client: Callable[..., Client], kubeconfig: Path, namespace: str
) -> None:
    client = make_client()
    await client.connect()
    dead = await raw_session(client, ttl=2)
    live = await sessions_of(client).get(60)
    claim = await create_claim(client, _as_session(dead), SEMAPHORE, "pool", {})
    live_claim = await create_claim(client, live, SEMAPHORE, "pool", {})
    body = {
        "metadata": {"name": "h"},
        "spec": {},
    }
    await client.store.create(HOLDINGS, namespace, body)
    obj = await client.store.get(HOLDINGS, namespace, "h")
    holders = {
        "a": {"holder": "dead-process", "session": dead.name, "token": 1},
        "b": {"holder": client.identity.holder, "session": live.name, "token": 2},
        "c": {"holder": "never-existed", "session": "no-such-session", "token": 3},
    }
    await client.store.replace(
        HOLDINGS, obj.with_status({"holders": holders}), subresource="status"
    )

    clock = FakeClock()
    async with operator(kubeconfig, namespace, clock) as core:

        async def only_b_left() -> bool:
            st = (await client.store.get(HOLDINGS, namespace, "h")).status
            return set(st.get("holders", {})) == {"b"}

        # "c" names a session that does not exist: reaped at once (confirmed by a GET).
        # "a" is not reaped before its session's TTL ran out on the operator's clock.
        async def c_gone() -> bool:
            st = (await client.store.get(HOLDINGS, namespace, "h")).status
            return "c" not in st.get("holders", {})

        await until(client, c_gone, "c reaped")
        assert await exists(client, SESSION, dead.name)
        assert "a" in (await client.store.get(HOLDINGS, namespace, "h")).status["holders"]

        clock.advance(2.5)
        core.poke()
        await until(client, only_b_left, "a reaped")

        async def dead_gone() -> bool:
            return not await exists(client, SESSION, dead.name) and not await exists(
                client, CLAIM, claim.name
            )

        await until(client, dead_gone, "session and its claim deleted")
        assert await exists(client, SESSION, live.name)
        assert await exists(client, CLAIM, live_claim.name)


async def test_a_pod_bound_session_ends_with_its_pod(
    holdings_crd: None, make_client: Callable[..., Client], kubeconfig: Path, namespace: str
) -> None:
    client = make_client()
    await client.connect()
    pod = await client.store.create(
        POD,
        namespace,
        {"metadata": {"name": "worker"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
    )
    session = await raw_session(
        client, ttl=0, pod={"name": "worker", "namespace": namespace, "uid": pod.uid}
    )
    await client.store.create(HOLDINGS, namespace, {"metadata": {"name": "h"}, "spec": {}})
    obj = await client.store.get(HOLDINGS, namespace, "h")
    holders = {"a": {"holder": "worker", "session": session.name, "token": 1}}
    await client.store.replace(
        HOLDINGS, obj.with_status({"holders": holders}), subresource="status"
    )

    async with operator(kubeconfig, namespace, FakeClock()):
        # Never expires by time: only the pod's end can end it.
        assert await exists(client, SESSION, session.name)
        await client.store.delete(POD, namespace, "worker")

        async def reaped() -> bool:
            st = (await client.store.get(HOLDINGS, namespace, "h")).status
            return not st.get("holders") and not await exists(client, SESSION, session.name)

        await until(client, reaped, "pod-bound session reaped")


async def test_queue_length_follows_the_claims_on_a_semaphore(
    make_client: Callable[..., Client],
    kubeconfig: Path,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pacing the counts (one write a second) is the unit tests' business, on a fake clock;
    # here every change is written as soon as the operator sees it.
    monkeypatch.setattr(_core, "RECOUNT_EVERY", 0.0)
    client = make_client()
    await client.connect()
    session = await sessions_of(client).get(60)
    await client.store.create(
        SEMAPHORE, namespace, {"metadata": {"name": "pool"}, "spec": {"permits": 1}}
    )
    elsewhere = await create_claim(client, session, SEMAPHORE, "other-pool", {})
    assert elsewhere.spec["target"]["name"] == "other-pool"
    clock = FakeClock()
    rules = {"Semaphore": registered()["Semaphore"]}
    labels = {"kind": "Semaphore", "namespace": namespace, "name": "pool"}
    async with operator(kubeconfig, namespace, clock, rules) as core:
        gauge = core.ctx.metrics.registry.get_sample_value
        # The operator's own watch: what its gauges are computed from.
        seen = await core.ctx.client.watch(SEMAPHORE, namespace)

        async def counted(n: int) -> None:
            with anyio.fail_after(15):
                while True:
                    changed = seen.next_any_change()
                    obj = seen.get("pool", namespace)
                    if obj is not None and obj.status.get("queueLength") == n:
                        break
                    await changed.wait()
            assert gauge("konductor_waiters", labels) == n
            fresh = await client.store.get(SEMAPHORE, namespace, "pool")
            assert fresh.status["queueLength"] == n

        await counted(0)
        claims = [await create_claim(client, session, SEMAPHORE, "pool", {}) for _ in range(3)]
        await counted(3)
        await client.store.delete(CLAIM, namespace, claims[0].name)
        await counted(2)
        for c in claims[1:]:
            await client.store.delete(CLAIM, namespace, c.name)
        await counted(0)


def _as_session(obj: KObject) -> Any:
    """A stand-in for a kernel Session of a raw session object (for create_claim)."""

    class _S:
        name = obj.name
        uid = obj.uid
        namespace = obj.namespace

    return _S()

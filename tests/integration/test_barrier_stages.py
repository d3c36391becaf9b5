"""Stages (one barrier per named stage) and the blocking facade, on the real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from konductor_sdk import Client, Identity, sync
from konductor_sdk._kernel.objects import BARRIER
from konductor_sdk._machines import barrier as bs
from konductor_sdk.barrier import Barrier
from konductor_sdk.stages import PIPELINE_LABEL, STAGE_INDEX_LABEL, STAGE_LABEL, Stages

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]


async def test_stages_open_in_order_and_are_listed_by_label(make_client: MakeClient) -> None:
    names = ["load", "train", "export"]
    parties = [
        Stages("pipeline", names, parties=3, client=make_client(holder=f"rank-{i}"))
        for i in range(3)
    ]
    ranks: dict[int, list[int]] = {}

    async def run(i: int) -> None:
        ranks[i] = [await parties[i].wait(stage) for stage in names]

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(run, i)
    for stage_index in range(3):
        assert sorted(r[stage_index] for r in ranks.values()) == [0, 1, 2]
    client = make_client(holder="kubectl")
    await client.connect()
    listed = await client.store.list(
        BARRIER, client.namespace, label_selector=f"{PIPELINE_LABEL}=pipeline"
    )
    rows = sorted(
        (o.labels[STAGE_INDEX_LABEL], o.labels[STAGE_LABEL], o.name, o.status["phase"])
        for o in listed.items
    )
    assert rows == [
        ("0", "load", "pipeline-load", bs.OPEN),
        ("1", "train", "pipeline-train", bs.OPEN),
        ("2", "export", "pipeline-export", bs.OPEN),
    ]
    # One party key per Stages instance, the same in every stage.
    for party in parties:
        keys = {s.party for _, s in party.statistics().stages}
        assert len(keys) == 1
        assert None not in keys
    statuses = await parties[0].status()
    assert [s.name for s in statuses] == ["pipeline-load", "pipeline-train", "pipeline-export"]


@pytest.fixture
def sync_clients(kubeconfig: Path, namespace: str) -> Iterator[Callable[[str], sync.Client]]:
    """Clients for the blocking facade: they live in the portal's event loop."""
    made: list[sync.Client] = []

    def factory(holder: str) -> sync.Client:
        client = sync.Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder))
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


async def test_blocking_parties_in_threads_meet_async_parties(
    make_client: MakeClient, sync_clients: Callable[[str], sync.Client]
) -> None:
    results: list[Any] = []

    def thread_party(i: int) -> None:
        with sync.Barrier("mixed", expected=4, client=sync_clients(f"thread-{i}")) as index:
            results.append(index)

    async def async_party(i: int) -> None:
        results.append(
            await Barrier("mixed", expected=4, client=make_client(holder=f"task-{i}")).wait()
        )

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(anyio.to_thread.run_sync, thread_party, i)
                tg.start_soon(async_party, i)
    assert sorted(results) == [0, 1, 2, 3]


async def test_blocking_once_waitgroup_and_stages(
    sync_clients: Callable[[str], sync.Client],
) -> None:
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"answer": 42}

    def scenario() -> None:
        once = sync.Once("blocking-once", client=sync_clients("once"))
        assert once.run(compute) == {"answer": 42}
        assert once.run(compute) == {"answer": 42}
        assert calls == [1]
        assert once.status().phase == "Done"
        wg = sync.WaitGroup("blocking-wg", client=sync_clients("wg"))
        assert wg.add(2) == 2
        assert wg.done() == 1
        assert wg.done() == 0
        wg.wait()
        stages = sync.Stages("solo", ["a", "b"], parties=1, client=sync_clients("stages"))
        assert [stages.wait("a"), stages.wait("b")] == [0, 0]
        assert [s.phase for s in stages.status()] == [bs.OPEN, bs.OPEN]

    with anyio.fail_after(60):
        await anyio.to_thread.run_sync(scenario)

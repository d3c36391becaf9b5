"""Renewals of one object by one client that are due together go in one JSON patch.

Against the real API server: the combined patch must apply every entry's ``test`` ops (so
a reaped entry fails it), and a failed combined patch must still renew every entry that
is ours while telling the one that is not.
"""

from __future__ import annotations

import os

import anyio
import pytest
from _scratch_crd import install_scratch_crd

from konductor_sdk import Client
from konductor_sdk._kernel.entries import EntryGone, Renewal, new_entry
from konductor_sdk._kernel.objects import KObject, ResourceKind
from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio

GROUP = f"renew{os.getpid()}.test.konductor.io"
ENTRIES = ResourceKind(GROUP, "v1", "entrysets", "EntrySet")
N = 40


@pytest.fixture(scope="module")
def entryset_crd(control_plane: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> None:
    install_scratch_crd(control_plane, tmp_path_factory.mktemp("crds"), ENTRIES)


@pytest.fixture
async def entries(entryset_crd: None, client: Client) -> tuple[KObject, list[Renewal]]:
    """An object holding N entries of this client, and a Renewal for each."""
    created = await client.store.create(
        ENTRIES, client.namespace, {"metadata": {"name": "e"}, "spec": {}}
    )
    holders = {f"k/{i}": new_entry(client, 30, token=i) for i in range(N)}
    written = await client.store.replace(
        ENTRIES, created.with_status({"holders": holders}), subresource="status"
    )
    renewals = [
        Renewal(
            client,
            ENTRIES,
            client.namespace,
            "e",
            ("status", "holders", f"k/{i}"),
            {"holder": client.identity.holder, "token": i},
            30,
            client.clock.monotonic(),
        )
        for i in range(N)
    ]
    return written, renewals


async def renew_all(renewals: list[Renewal]) -> dict[int, BaseException]:
    """Renew every entry at once (tasks started together); the failures by index."""
    failures: dict[int, BaseException] = {}

    async def one(i: int) -> None:
        try:
            await renewals[i].renew_once()
        except EntryGone as exc:
            failures[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(len(renewals)):
            tg.start_soon(one, i)
    return failures


async def test_renewals_due_together_go_in_one_patch(
    entries: tuple[KObject, list[Renewal]], client: Client
) -> None:
    _, renewals = entries
    before = client.store.stats["patch"]
    assert await renew_all(renewals) == {}
    # Every renewal asked before the flusher ran, so one patch carried all N.
    assert client.store.stats["patch"] - before == 1
    obj = await client.store.get(ENTRIES, client.namespace, "e")
    assert {e["renewCount"] for e in obj.status["holders"].values()} == {1}
    sent = {r.last_ok_sent for r in renewals}
    assert len(sent) == 1  # one send time: they stay due together


async def test_a_reaped_entry_fails_alone(
    entries: tuple[KObject, list[Renewal]], client: Client
) -> None:
    written, renewals = entries
    # An observer reaps entry 7 and another process reuses entry 9's key (new token).
    holders = dict(written.status["holders"])
    del holders["k/7"]
    holders["k/9"] = dict(holders["k/9"], token=999)
    await client.store.replace(
        ENTRIES, written.with_status({"holders": holders}), subresource="status"
    )
    failures = await renew_all(renewals)
    assert sorted(failures) == [7, 9]
    obj = await client.store.get(ENTRIES, client.namespace, "e")
    counts = {k: e["renewCount"] for k, e in obj.status["holders"].items()}
    assert "k/7" not in counts
    assert counts.pop("k/9") == 0  # not ours: untouched
    assert set(counts.values()) == {1}
    assert [r.renew_count for r in renewals].count(1) == N - 2


async def test_a_cancelled_renewal_does_not_hold_up_the_others(
    entries: tuple[KObject, list[Renewal]], client: Client
) -> None:
    _, renewals = entries
    with anyio.CancelScope() as scope:
        scope.cancel()
        await renewals[0].renew_once()
    assert await renew_all(renewals[1:]) == {}
    assert all(r.renew_count == 1 for r in renewals[1:])

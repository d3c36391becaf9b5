"""The Barrier, Once and WaitGroup CRDs: schema and CEL validation on the real server."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk import Client, InvalidObjectError
from konductor_sdk._kernel.objects import BARRIER, ONCE, WAITGROUP, ResourceKind

pytestmark = pytest.mark.anyio


async def create(client: Client, kind: ResourceKind, spec: dict[str, Any]) -> None:
    body = {"metadata": {"generateName": "crd-"}, "spec": spec}
    await client.store.create(kind, client.namespace, body)


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"expected": 3, "quorum": 4}, "spec.quorum", "must be <= spec.expected"),
        ({"expected": 0}, "spec.expected", "greater than or equal to 1"),
        ({"expected": 1025}, "spec.expected", "less than or equal to 1024"),
        ({"expected": 2, "quorum": 0}, "spec.quorum", "greater than or equal to 1"),
        ({"expected": 2, "timeoutSeconds": 0}, "spec.timeoutSeconds", "greater than 0"),
        ({"expected": 2, "timeoutSeconds": -5}, "spec.timeoutSeconds", "greater than 0"),
        ({"expected": 2, "lastCallSeconds": 3}, "spec.lastCallSeconds", "needs spec.quorum"),
        (
            {"expected": 2, "quorum": 1, "lastCallSeconds": -1},
            "spec.lastCallSeconds",
            "greater than or equal to 0",
        ),
        ({}, "spec.expected", "Required value"),
    ],
)
async def test_invalid_barriers_are_rejected_naming_the_field(
    client: Client, spec: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidObjectError) as info:
        await create(client, BARRIER, spec)
    assert field in str(info.value)
    assert message in str(info.value)


async def test_a_valid_barrier_is_accepted_and_quorum_cannot_be_raised_past_expected(
    client: Client,
) -> None:
    spec = {"expected": 4, "quorum": 2, "lastCallSeconds": 1.5, "timeoutSeconds": 30}
    obj = await client.store.create(
        BARRIER, client.namespace, {"metadata": {"name": "ok"}, "spec": spec}
    )
    assert obj.spec == spec
    with pytest.raises(InvalidObjectError, match=r"spec\.quorum"):
        await client.store.patch(BARRIER, client.namespace, "ok", {"spec": {"quorum": 5}})
    with pytest.raises(InvalidObjectError, match=r"spec\.quorum"):
        await client.store.patch(BARRIER, client.namespace, "ok", {"spec": {"expected": 1}})


async def test_the_status_schema_rejects_a_negative_waitgroup_counter(client: Client) -> None:
    obj = await client.store.create(WAITGROUP, client.namespace, {"metadata": {"name": "wg"}})
    with pytest.raises(InvalidObjectError, match=r"status\.counter"):
        await client.store.replace(
            WAITGROUP, obj.with_status({"counter": -1}), subresource="status"
        )


async def test_a_once_holds_at_most_one_runner(client: Client) -> None:
    obj = await client.store.create(ONCE, client.namespace, {"metadata": {"name": "o"}, "spec": {}})
    runners = {k: {"holder": k, "attempt": 1} for k in ("a", "b")}
    with pytest.raises(InvalidObjectError, match=r"status\.holders"):
        await client.store.replace(
            ONCE, obj.with_status({"phase": "Running", "holders": runners}), subresource="status"
        )


async def test_printer_columns_show_phase_and_counts() -> None:
    from konductor_sdk.testing._crds import load_crds

    crds = {c["spec"]["names"]["kind"]: c for c in load_crds([_crd_dir()])}
    columns = {
        kind: [col["name"] for col in crds[kind]["spec"]["versions"][0]["additionalPrinterColumns"]]
        for kind in ("Barrier", "Once", "WaitGroup")
    }
    assert columns["Barrier"][:4] == ["Phase", "Arrived", "Expected", "Quorum"]
    assert "Gen" in columns["Barrier"]
    assert columns["WaitGroup"][:2] == ["Counter", "Phase"]
    assert columns["Once"][:2] == ["Phase", "Attempts"]


def _crd_dir() -> str:
    from konductor_sdk.testing._crds import default_crd_dirs

    for directory in default_crd_dirs():
        if (directory / "barrier.yaml").exists():
            return str(directory)
    raise AssertionError("barrier.yaml not found in the CRD directories")

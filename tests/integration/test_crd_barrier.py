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
        ({"expected": 2**31}, "spec.expected", "less than or equal to 2147483647"),
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


async def test_ten_thousand_parties_are_a_valid_spec(client: Client) -> None:
    obj = await client.store.create(
        BARRIER, client.namespace, {"metadata": {"name": "big"}, "spec": {"expected": 10_000}}
    )
    assert obj.spec["expected"] == 10_000


PREVIOUS = {"generation": 1, "phase": "Open", "arrived": 3, "nextIndex": 3}
HISTORY = {"generation": 1, "phase": "Open", "at": "t", "arrived": 3, "nextIndex": 3}


def waiting(arrived_by: dict[str, int], **extra: Any) -> dict[str, Any]:
    n = sum(arrived_by.values())
    return {
        "generation": 1,
        "phase": "Waiting",
        "arrived": n,
        "arrivedBy": arrived_by,
        "nextIndex": n,
        **extra,
    }


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        (waiting({"a": 1}), {**waiting({"a": 1}), "phase": "Open"}, "may become Open only"),
        (
            {**waiting({"a": 3}), "phase": "Open"},
            waiting({"a": 3}),
            "a concluded generation .Open or Failed. keeps its phase",
        ),
        (
            {**waiting({"a": 3}), "generation": 2},
            waiting({"a": 3}),
            "never goes back",
        ),
        (waiting({"a": 1}), {**waiting({}), "generation": 2}, "only from a concluded"),
        (waiting({"a": 1}), {**waiting({"a": 1}), "arrived": 2, "nextIndex": 2}, "sum of"),
        (waiting({"a": 1}), {**waiting({"a": 2}), "nextIndex": 1}, "nextIndex minus"),
        (
            waiting({"a": 2}),
            {**waiting({}), "nextIndex": 2, "departed": [[0, 1], [0, 1]]},
            "disjoint",
        ),
        (
            waiting({"a": 2}),
            {**waiting({"a": 1}), "nextIndex": 2, "departed": [[5, 1]]},
            "below status.nextIndex",
        ),
        (
            {**waiting({"a": 1}), "nextIndex": 2, "departed": [[0, 1]]},
            waiting({"a": 1}),
            "never go down",
        ),
        (
            waiting({"a": 1}),
            {**waiting({"a": 1}), "nextIndex": 1001, "departed": [[1, 1000]]},
            "either adds arrivals",
        ),
        (
            {**waiting({"a": 1}), "generation": 2, "previous": PREVIOUS},
            {**waiting({"a": 1}), "generation": 2, "previous": {**PREVIOUS, "departed": [[0, 1]]}},
            "previous changes only",
        ),
        (
            {**waiting({"a": 3}), "phase": "Open"},
            {**waiting({"b": 1}), "generation": 2, "previous": {**PREVIOUS, "nextIndex": 9}},
            "must record the generation that concluded",
        ),
        (
            {**waiting({"a": 1}), "history": [HISTORY]},
            {**waiting({"a": 1}), "history": []},
            "history changes only",
        ),
    ],
)
async def test_the_status_rules_refuse_inconsistent_counters(
    client: Client, before: dict[str, Any], after: dict[str, Any], message: str
) -> None:
    obj = await client.store.create(
        BARRIER, client.namespace, {"metadata": {"generateName": "st-"}, "spec": {"expected": 3}}
    )
    obj = await client.store.replace(BARRIER, obj.with_status(before), subresource="status")
    with pytest.raises(InvalidObjectError, match=message):
        await client.store.replace(BARRIER, obj.with_status(after), subresource="status")


async def test_the_status_schema_rejects_a_negative_waitgroup_counter(client: Client) -> None:
    obj = await client.store.create(WAITGROUP, client.namespace, {"metadata": {"name": "wg"}})
    with pytest.raises(InvalidObjectError, match=r"status\.counter"):
        await client.store.replace(
            WAITGROUP, obj.with_status({"counter": -1}), subresource="status"
        )


async def test_a_waitgroup_epoch_never_goes_back(client: Client) -> None:
    obj = await client.store.create(WAITGROUP, client.namespace, {"metadata": {"name": "wg2"}})
    obj = await client.store.replace(
        WAITGROUP, obj.with_status({"counter": 0, "epoch": 3}), subresource="status"
    )
    for bad, message in [
        ({"counter": 0, "epoch": 2}, "never goes down"),
        ({"counter": 2, "epoch": 4}, "when the counter drops to zero"),
        ({"counter": 0, "epoch": 9}, "grows by one"),
    ]:
        with pytest.raises(InvalidObjectError, match=message):
            await client.store.replace(WAITGROUP, obj.with_status(bad), subresource="status")


async def test_a_once_holds_at_most_one_runner(client: Client) -> None:
    obj = await client.store.create(ONCE, client.namespace, {"metadata": {"name": "o"}, "spec": {}})
    runners = {k: {"session": "s", "creator": "c", "attempt": 1} for k in ("a", "b")}
    with pytest.raises(InvalidObjectError, match=r"status\.holders"):
        await client.store.replace(
            ONCE,
            obj.with_status({"phase": "Running", "attempts": 1, "holders": runners}),
            subresource="status",
        )
    obj = await client.store.replace(
        ONCE, obj.with_status({"phase": "Pending", "attempts": 1}), subresource="status"
    )
    for attempts in (0, 5):
        with pytest.raises(InvalidObjectError, match="attempts never goes down"):
            await client.store.replace(
                ONCE,
                obj.with_status({"phase": "Pending", "attempts": attempts}),
                subresource="status",
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


async def test_the_most_departed_ranges_a_generation_may_have_fit_the_rules_cost(
    client: Client,
) -> None:
    """The CRD checks pairwise that departed ranges are disjoint; the machine's bound on
    their number must stay within the API server's cost limit for that rule."""
    from konductor_sdk._machines.barrier import DEPARTED_LIMIT

    n = DEPARTED_LIMIT
    obj = await client.store.create(
        BARRIER, client.namespace, {"metadata": {"name": "ranges"}, "spec": {"expected": 9999}}
    )
    before = waiting({"a": 3 * n})
    obj = await client.store.replace(BARRIER, obj.with_status(before), subresource="status")
    departed = [[2 * i, 1] for i in range(n)]
    after = {**before, "arrived": 2 * n, "arrivedBy": {"a": 2 * n}, "departed": departed}
    obj = await client.store.replace(BARRIER, obj.with_status(after), subresource="status")
    assert len(obj.status["departed"]) == n

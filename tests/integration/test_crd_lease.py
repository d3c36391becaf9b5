"""The Lease CRD as installed on the real API server: defaults, bounds, the one-holder map,
the fencing counter's rules (binding on everyone, admins included), and the printer
columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from konductor_sdk import Client, InvalidObjectError
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._machines import lease as state

CRD = Path(__file__).resolve().parents[2] / "crds" / "lease.yaml"


def _entry(holder: str, **extra: Any) -> dict[str, Any]:
    return {
        "holder": holder,
        "creator": "admin",
        "session": "s",
        "ttlSeconds": 5,
        "renewCount": 0,
        **extra,
    }


async def _create(client: Client, name: str, spec: dict[str, Any] | None = None) -> KObject:
    body = {"metadata": {"name": name, "namespace": client.namespace}, "spec": spec or {}}
    return await client.store.create(LEASE, client.namespace, body)


async def _put_status(client: Client, obj: KObject, status: dict[str, Any]) -> KObject:
    return await client.store.replace(LEASE, obj.with_status(status), subresource="status")


def test_crd_file_matches_the_kind_constant() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["group"] == LEASE.group
    assert crd["spec"]["names"]["plural"] == LEASE.plural
    assert crd["spec"]["names"]["kind"] == LEASE.kind
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["holders"]["maxProperties"] == 1
    assert "candidates" not in status["properties"]  # candidates are Claims


@pytest.mark.anyio
async def test_defaults_bounds_and_the_fresh_status(client: Client) -> None:
    obj = await _create(client, "defaults")
    assert obj.spec["ttlSeconds"] == 15
    # Create cannot set status; the defaults give a grant something to "test".
    assert dict(obj.status) == state.normalize(obj.spec, {})
    for bad in (0, 86401):
        with pytest.raises(InvalidObjectError, match="ttlSeconds"):
            await _create(client, f"bad-{bad}", {"ttlSeconds": bad})


@pytest.mark.anyio
async def test_one_holder_with_the_required_fields(client: Client) -> None:
    obj = await _create(client, "one-holder")
    two = {"holders": {"a#1": _entry("a", token=1), "b#1": _entry("b", token=1)}}
    with pytest.raises(InvalidObjectError, match="holders"):
        await _put_status(client, obj, {**two, "fencingToken": 1, "holder": "a"})
    for missing in ("creator", "session", "token"):
        entry = {k: v for k, v in _entry("a", token=1).items() if k != missing}
        with pytest.raises(InvalidObjectError, match=missing):
            await _put_status(
                client, obj, {"holders": {"a#1": entry}, "fencingToken": 1, "holder": "a"}
            )
    bad = {"holders": {"a#1": _entry("a", token=1, priority=1_000_001)}}
    with pytest.raises(InvalidObjectError, match="priority"):
        await _put_status(client, obj, {**bad, "fencingToken": 1, "holder": "a"})
    one = {"holders": {"a#1": _entry("a", token=1)}, "fencingToken": 1, "transitions": 1}
    with pytest.raises(InvalidObjectError, match=r"status\.holder must name"):
        await _put_status(client, obj, {**one, "holder": "somebody else"})
    written = await _put_status(client, obj, {**one, "holder": "a"})
    assert written.status["holders"]["a#1"]["token"] == 1


@pytest.mark.anyio
async def test_the_fencing_counter_rules(client: Client) -> None:
    obj = await _create(client, "monotonic")
    held = {"holders": {"a#1": _entry("a", token=1)}, "fencingToken": 1, "transitions": 1}
    obj = await _put_status(client, obj, {**held, "holder": "a"})
    free = {"holders": {}, "fencingToken": 1, "transitions": 1, "holder": ""}
    cases = [
        ({**free, "fencingToken": 0, "transitions": 0}, "never decreases"),
        ({k: v for k, v in free.items() if k != "fencingToken"}, "never decreases"),
        ({**free, "fencingToken": 2**63 - 1}, "at most one per write"),
        ({**free, "fencingToken": 2}, "only with a grant"),
        # a new holder must take exactly the next token, in the same write
        ({**free, "holders": {"b#1": _entry("b", token=1)}, "holder": "b"}, "next fencing token"),
        (
            {**free, "holders": {"b#1": _entry("b", token=3)}, "fencingToken": 3, "holder": "b"},
            "at most one per write",
        ),
        # an existing entry's token, creator and session never change
        ({**held, "holders": {"a#1": _entry("a", token=1, creator="x")}, "holder": "a"}, "creator"),
        ({**held, "transitions": 0, "holder": "a"}, "transitions"),
    ]
    for status, fragment in cases:
        with pytest.raises(InvalidObjectError, match=fragment):
            await _put_status(client, obj, status)
    obj = await _put_status(client, obj, free)  # a release
    grant = {
        **free,
        "holders": {"b#1": _entry("b", token=2)},
        "fencingToken": 2,
        "transitions": 2,
        "holder": "b",
    }
    written = await _put_status(client, obj, grant)
    assert written.status["fencingToken"] == 2


@pytest.mark.anyio
async def test_printer_columns_show_holder_and_token(client: Client) -> None:
    obj = await _create(client, "columns", {"ttlSeconds": 30})
    status = {
        "holders": {"a#1": _entry("pod-a", token=1)},
        "fencingToken": 1,
        "transitions": 1,
        "holder": "pod-a",
        "renewTime": "2026-01-02T03:04:05.000000Z",
    }
    await _put_status(client, obj, status)
    table = await _table(client, "columns")
    columns = [c["name"] for c in table["columnDefinitions"]]
    row = dict(zip(columns, table["rows"][0]["cells"], strict=True))
    assert row["Holder"] == "pod-a"
    assert row["Token"] == 1
    assert row["TTL"] == 30


async def _table(client: Client, name: str) -> dict[str, Any]:
    # What `kubectl get` asks for: the server-side Table rendering of printer columns.
    api = client._api_client
    resp = await api.call_api(
        LEASE.path(client.namespace, name),
        "GET",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    async with resp:
        table: dict[str, Any] = json.loads(await resp.read())
    return table

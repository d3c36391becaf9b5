"""The Lease CRD as installed on the real API server: defaults, bounds, the one-holder map,
the monotonic fencing token, and the printer columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from konductor_sdk import Client, InvalidObjectError
from konductor_sdk._kernel.objects import LEASE, KObject
from konductor_sdk._machines.lease import MAX_CANDIDATES

CRD = Path(__file__).resolve().parents[2] / "crds" / "lease.yaml"


def _entry(holder: str, **extra: Any) -> dict[str, Any]:
    return {"holder": holder, "ttlSeconds": 5, "renewCount": 0, **extra}


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
    assert status["properties"]["candidates"]["maxProperties"] == MAX_CANDIDATES


@pytest.mark.anyio
async def test_spec_defaults_and_bounds(client: Client) -> None:
    obj = await _create(client, "defaults")
    assert obj.spec["ttlSeconds"] == 15
    for bad in (0, 86401):
        with pytest.raises(InvalidObjectError, match="ttlSeconds"):
            await _create(client, f"bad-{bad}", {"ttlSeconds": bad})


@pytest.mark.anyio
async def test_status_allows_one_holder_only(client: Client) -> None:
    obj = await _create(client, "one-holder")
    two = {
        "holders": {"a#1": _entry("a", token=1), "b#1": _entry("b", token=2)},
        "fencingToken": 2,
    }
    with pytest.raises(InvalidObjectError, match="holders"):
        await _put_status(client, obj, two)
    one = {"holders": {"a#1": _entry("a", token=1)}, "fencingToken": 1, "holder": "a"}
    written = await _put_status(client, obj, one)
    assert written.status["holders"]["a#1"]["token"] == 1


@pytest.mark.anyio
async def test_fencing_token_never_decreases_and_bounds_holder_tokens(client: Client) -> None:
    obj = await _create(client, "monotonic")
    obj = await _put_status(client, obj, {"fencingToken": 5})
    with pytest.raises(InvalidObjectError, match="fencingToken never decreases"):
        await _put_status(client, obj, {"fencingToken": 4})
    ahead = {"fencingToken": 5, "holders": {"a#1": _entry("a", token=6)}}
    with pytest.raises(InvalidObjectError, match="cannot exceed"):
        await _put_status(client, obj, ahead)


@pytest.mark.anyio
async def test_candidates_map_is_bounded(client: Client) -> None:
    obj = await _create(client, "many-candidates")
    full = {f"c#{i}": _entry(f"c{i}", priority=i) for i in range(MAX_CANDIDATES + 1)}
    with pytest.raises(InvalidObjectError, match="candidates"):
        await _put_status(client, obj, {"candidates": full})


@pytest.mark.anyio
async def test_printer_columns_show_holder_and_token(client: Client) -> None:
    obj = await _create(client, "columns", {"ttlSeconds": 30})
    status = {
        "holders": {"a#1": _entry("pod-a", token=3)},
        "fencingToken": 3,
        "holder": "pod-a",
        "renewTime": "2026-01-02T03:04:05.000000Z",
    }
    await _put_status(client, obj, status)
    table = await _table(client, "columns")
    columns = [c["name"] for c in table["columnDefinitions"]]
    row = dict(zip(columns, table["rows"][0]["cells"], strict=True))
    assert row["Holder"] == "pod-a"
    assert row["Token"] == 3
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

"""crds/gate.yaml spells the condition item once per nesting level (structural schemas
cannot recurse): the levels must stay identical, and the limits must match the parser's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from konductor_sdk._machines.gate_spec import LEVEL_MAX_ITEMS, MAX_DEPTH, MAX_EXPRESSION, TYPES

CRD = Path(__file__).resolve().parents[2] / "crds" / "gate.yaml"


def levels() -> list[dict[str, Any]]:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    out = []
    array = spec["properties"]["conditions"]
    while True:
        out.append(array)
        group = array["items"]["properties"].get("group")
        if group is None:
            return out
        array = group["properties"]["conditions"]


def test_levels_match_the_parser() -> None:
    arrays = levels()
    assert len(arrays) == MAX_DEPTH
    assert [a["maxItems"] for a in arrays] == list(LEVEL_MAX_ITEMS)
    first = arrays[0]["items"]["properties"]
    for array in arrays:
        props = array["items"]["properties"]
        assert set(props) - {"group"} == {"name", *TYPES}
        for key in ("name", *TYPES):
            assert props[key] == first[key], key
        assert array["x-kubernetes-list-map-keys"] == ["name"]
    assert first["object"]["properties"]["expression"]["maxLength"] == MAX_EXPRESSION


def test_printer_columns_and_names() -> None:
    crd = yaml.safe_load(CRD.read_text())
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "Gate",
        ["gt"],
        ["konductor"],
    )
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Met", "Age"]

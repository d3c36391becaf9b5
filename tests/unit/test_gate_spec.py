"""The Gate spec parser: every rule names the field path and the allowed range."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk import ConfigurationError
from konductor_sdk._machines.gate_spec import MAX_CONDITIONS, parse_spec


def ext(name: str) -> dict[str, Any]:
    return {"name": name, "external": {}}


def group(name: str, *items: dict[str, Any], match: str = "all") -> dict[str, Any]:
    return {"name": name, "group": {"match": match, "conditions": list(items)}}


BAD: list[tuple[Any, str]] = [
    ([], "spec must be an object"),
    ({}, "spec.conditions must be a list of 1..32"),
    ({"conditions": [ext(f"c{i}") for i in range(33)]}, "1..32"),
    ({"conditions": [ext("a")], "match": "some"}, "spec.match must be one of all, any"),
    ({"conditions": [ext("a")], "latch": "yes"}, "spec.latch must be a boolean"),
    ({"conditions": [ext("a")], "timeoutSeconds": 0}, "spec.timeoutSeconds must be an integer"),
    ({"conditions": [ext("a")], "timeoutSeconds": True}, "spec.timeoutSeconds"),
    ({"conditions": ["a"]}, "spec.conditions[0] must be an object"),
    ({"conditions": [{"name": "a-", "external": {}}]}, "spec.conditions[0].name"),
    ({"conditions": [{"name": "a" * 64, "external": {}}]}, "at most 63"),
    ({"conditions": [ext("a"), ext("a")]}, "spec.conditions[1].name: 'a' is used twice"),
    ({"conditions": [group("g", ext("a")), ext("a")]}, "used twice"),
    ({"conditions": [{"name": "a"}]}, "must set exactly one of"),
    ({"conditions": [{"name": "a", "external": {}, "http": {"url": "http://x"}}]}, "exactly one"),
    ({"conditions": [{"name": "a", "external": {}, "extra": 1}]}, "unknown field(s) extra"),
    ({"conditions": [{"name": "a", "external": {"x": 1}}]}, "spec.conditions[0].external: unk"),
    ({"conditions": [{"name": "a", "job": {}}]}, "spec.conditions[0].job.name is required"),
    ({"conditions": [{"name": "a", "job": {"name": "Bad_Name"}}]}, "job.name must be an obj"),
    ({"conditions": [{"name": "a", "job": {"name": "j", "namespace": "a.b"}}]}, "namespace"),
    ({"conditions": [{"name": "a", "job": {"name": "j", "state": "Done"}}]}, "Complete, Failed"),
    ({"conditions": [{"name": "a", "barrier": {"name": "b", "state": "Closed"}}]}, "Open, Failed"),
    ({"conditions": [{"name": "a", "lease": {"name": "b", "state": "Taken"}}]}, "Held, Free"),
    ({"conditions": [{"name": "a", "semaphore": {"name": "b", "minAvailable": 0}}]}, "1..1000000"),
    ({"conditions": [{"name": "a", "object": {"name": "b"}}]}, "object.apiVersion is required"),
    (
        {
            "conditions": [
                {
                    "name": "a",
                    "object": {
                        "name": "b",
                        "apiVersion": "apps/v1",
                        "kind": "1x",
                        "expression": "true",
                    },
                }
            ]
        },
        "object.kind must be a kind",
    ),
    (
        {
            "conditions": [
                {
                    "name": "a",
                    "object": {
                        "name": "b",
                        "apiVersion": "Apps",
                        "kind": "X",
                        "expression": "true",
                    },
                }
            ]
        },
        "apiVersion such as v1",
    ),
    (
        {
            "conditions": [
                {
                    "name": "a",
                    "object": {
                        "name": "b",
                        "apiVersion": "v1",
                        "kind": "X",
                        "expression": "x" * 1025,
                    },
                }
            ]
        },
        "at most 1024 characters",
    ),
    ({"conditions": [{"name": "a", "http": {"url": "file:///etc"}}]}, "http.url must be"),
    ({"conditions": [{"name": "a", "http": {"url": "http://x", "expectStatus": 99}}]}, "100..599"),
    (
        {"conditions": [{"name": "a", "http": {"url": "http://x", "jsonValue": "1"}}]},
        "jsonValue needs",
    ),
    (
        {"conditions": [{"name": "a", "http": {"url": "http://x", "timeoutSeconds": 20}}]},
        "timeoutSeconds must be <= intervalSeconds (10)",
    ),
    ({"conditions": [group("g", ext("a"), match="most")]}, "group.match must be one of"),
    ({"conditions": [{"name": "g", "group": {"conditions": [], "x": 1}}]}, "{match, conditions}"),
    ({"conditions": [group("g")]}, "group.conditions must be a list of 1..16"),
    (
        {"conditions": [group("g1", group("g2", group("g3", ext("a"))))]},
        "spec.conditions[0].group.conditions[0].group.conditions[0].group: groups nest at most 3",
    ),
]


@pytest.mark.parametrize(("spec", "text"), BAD)
def test_bad_specs_name_the_field(spec: Any, text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_spec(spec)
    assert text in str(info.value)


def test_total_named_items_are_bounded_across_levels() -> None:
    groups = [group(f"g{i}", *[ext(f"c{i}-{j}") for j in range(7)]) for i in range(8)]
    assert len(parse_spec({"conditions": groups}).leaves) == 56
    more = [*groups, group("g8", ext("x"))]
    with pytest.raises(ConfigurationError, match=f"at most {MAX_CONDITIONS} conditions"):
        parse_spec({"conditions": more})


def test_defaults_fingerprints_and_order() -> None:
    spec = {
        "conditions": [
            {"name": "j", "job": {"name": "build"}},
            group("g", {"name": "h", "http": {"url": "http://x/y"}}, ext("e"), match="any"),
        ]
    }
    gs = parse_spec(spec)
    assert [leaf.name for leaf in gs.leaves] == ["j", "h", "e"]
    job = gs.leaf("j")
    assert job is not None
    assert job.params["state"] == "Complete"
    http = gs.leaf("h")
    assert http is not None
    assert (http.params["expectStatus"], http.params["intervalSeconds"]) == (200, 10)
    assert http.path == "spec.conditions[1].group.conditions[0]"
    again = parse_spec({**spec, "latch": True})
    assert [lf.fingerprint for lf in again.leaves] == [lf.fingerprint for lf in gs.leaves]
    assert again.hash != gs.hash

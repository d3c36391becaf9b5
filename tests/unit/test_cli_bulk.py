"""Bulk input parsing: every document validated before the first write."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from konductor_sdk import ConfigurationError
from konductor_sdk._kernel.objects import BARRIER, MUTEX, SEMAPHORE
from konductor_sdk.cli._bulk import flatten, parse_items, parse_releases, read_documents


def test_yaml_documents_json_lists_and_kind_list_are_all_accepted(tmp_path: Path) -> None:
    docs = tmp_path / "docs.yaml"
    docs.write_text(
        "kind: Mutex\nmetadata: {name: a}\n---\n- kind: Barrier\n  metadata: {name: b}\n"
    )
    listed = tmp_path / "list.json"
    listed.write_text(
        '{"kind": "List", "items": [{"kind": "Semaphore", "metadata": {"name": "c"}, '
        '"spec": {"permits": 2}, "status": {"holders": {}}}]}'
    )
    items = parse_items(read_documents(str(docs)) + read_documents(str(listed)), source="x")
    assert [(i.resource, i.name) for i in items] == [(MUTEX, "a"), (BARRIER, "b"), (SEMAPHORE, "c")]
    assert items[0].body["spec"] == {}  # CRDs require spec, even an empty one
    assert "status" not in items[2].body  # server-owned fields are dropped


def test_get_output_round_trips(tmp_path: Path) -> None:
    got = {
        "apiVersion": "sync.konductor.io/v1alpha1",
        "kind": "Semaphore",
        "metadata": {
            "name": "gpu",
            "namespace": "ml",
            "uid": "u",
            "resourceVersion": "7",
            "labels": {"team": "ml"},
            "managedFields": [],
        },
        "spec": {"permits": 4},
        "status": {"inUse": 1},
    }
    (item,) = parse_items([got], source="x")
    assert item.namespace == "ml"
    assert item.body["metadata"] == {"name": "gpu", "namespace": "ml", "labels": {"team": "ml"}}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("42", "item 1: must be a mapping"),
        ("kind: Pod\nmetadata: {name: a}", "unknown kind 'Pod'"),
        ("kind: Mutex", "item 1: metadata is missing"),
        ("kind: Mutex\nmetadata: {name: Bad}", "item 1: metadata.name must be a DNS subdomain"),
        ("apiVersion: v1\nkind: Mutex\nmetadata: {name: a}", "apiVersion must be sync.konductor"),
        ("kind: Mutex\nmetadata: {name: a}\n---\nkind: Mutex\nmetadata: {name: a}", "twice"),
        ("", "no objects found"),
    ],
)
def test_bad_input_names_the_item(doc: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        parse_items(list(yaml.safe_load_all(doc)), source="f.yaml")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No such file"):
        read_documents(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(ConfigurationError, match="not valid YAML/JSON"):
        read_documents(str(bad))


def test_release_records() -> None:
    records = [
        {"kind": "semaphore", "name": "gpu", "key": "h#1", "namespace": "ml"},
        {"kind": "Lease", "name": "l", "holder": "h"},
    ]
    releases = parse_releases(records, source="x")
    assert [(r.kind, r.name, r.namespace, r.who) for r in releases] == [
        ("semaphore", "gpu", "ml", "h#1"),
        ("lease", "l", None, "h"),
    ]
    with pytest.raises(ConfigurationError, match="kind must be one of"):
        parse_releases([{"kind": "barrier", "name": "b", "key": "k"}], source="x")
    with pytest.raises(ConfigurationError, match="needs key"):
        parse_releases([{"kind": "mutex", "name": "m"}], source="x")


def test_flatten_nests() -> None:
    assert flatten([[1, [2]], {"kind": "List", "items": [3, {"kind": "List"}]}]) == [1, 2, 3]


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        (
            {
                "name": "c",
                "object": {"apiVersion": "v1", "kind": "Pod", "name": "p", "expression": "a ==="},
            },
            "spec.conditions[0].object.expression is not valid CEL",
        ),
        ({"name": "Bad", "external": {}}, "spec.conditions[0].name must be a DNS label"),
        ({"name": "j", "job": {}}, "job"),
    ],
)
def test_a_gate_is_checked_like_gate_create_does(
    condition: dict[str, object], fragment: str
) -> None:
    gate = {"kind": "Gate", "metadata": {"name": "g"}, "spec": {"conditions": [condition]}}
    with pytest.raises(ConfigurationError) as info:
        parse_items([{"kind": "Mutex", "metadata": {"name": "m"}}, gate], source="f")
    assert str(info.value).startswith("f item 2 (Gate g): ")
    assert fragment in str(info.value)


def test_a_bad_namespace_is_refused_by_the_namespace_rules() -> None:
    with pytest.raises(ConfigurationError, match=r"metadata\.namespace must be a namespace name"):
        parse_items([{"kind": "Mutex", "metadata": {"name": "m", "namespace": "a.b"}}], source="f")

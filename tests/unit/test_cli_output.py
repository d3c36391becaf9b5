"""Output rendering: the same plain data as JSON, YAML or a table."""

from __future__ import annotations

import datetime as dt
import json

import attrs
import pytest
import yaml
from rich.console import Console

from konductor_sdk._kernel.objects import KObject
from konductor_sdk.cli import _objects, _output
from konductor_sdk.cli._generic import list_table, render_object


@attrs.frozen
class Inner:
    when: dt.datetime
    tags: tuple[str, ...]


@attrs.frozen
class Outer:
    name: str
    inner: Inner
    items: tuple[Inner, ...]


def test_plain_converts_attrs_datetimes_and_tuples() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    value = Outer("x", Inner(when, ("a",)), (Inner(when, ()),))
    assert _output.plain(value) == {
        "name": "x",
        "inner": {"when": "2026-01-02T03:04:05+00:00", "tags": ["a"]},
        "items": [{"when": "2026-01-02T03:04:05+00:00", "tags": []}],
    }
    assert json.loads(_output.dumps(value, "json")) == yaml.safe_load(_output.dumps(value, "yaml"))


def test_emit_json_goes_to_stdout_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    _output.emit({"b": 1, "a": [1, 2]}, "json")
    assert json.loads(capsys.readouterr().out) == {"b": 1, "a": [1, 2]}


def _render(renderable: object) -> str:
    console = Console(width=200, record=True, force_terminal=False)
    console.print(renderable)
    return console.export_text()


SEM = KObject(
    {
        "kind": "Semaphore",
        "metadata": {"name": "gpu", "namespace": "ml", "generation": 2, "resourceVersion": "9"},
        "spec": {"permits": 2},
        "status": {
            "phase": "Full",
            "inUse": 2,
            "fencingToken": 4,
            # Object model v2: grants keyed by their first slot; the queue is Claims.
            "holders": {
                "0": {"holder": "h1", "weight": 1, "token": 3, "session": "s1", "creator": "u"},
                "1": {
                    "holder": "h2",
                    "weight": 1,
                    "token": 4,
                    "session": "s2",
                    "creator": "u",
                    "claim": "gpu-granted",
                },
            },
        },
    }
)


def _claim(name: str, rv: str, holder: str, *, priority: int = 0, **spec: object) -> KObject:
    return KObject(
        {
            "kind": "Claim",
            "metadata": {"name": name, "namespace": "ml", "resourceVersion": rv},
            "spec": {
                "target": {"kind": "Semaphore", "name": "gpu"},
                "session": f"session-{holder}",
                "holder": holder,
                "weight": 2,
                "priority": priority,
                **spec,
            },
        }
    )


# h2's claim is granted but not deleted yet (not a waiter); h4 outranks h3 by priority.
CLAIMS = [
    _claim("gpu-h3", "20", "h3"),
    _claim("gpu-granted", "10", "h2"),
    _claim("gpu-h4", "30", "h4", priority=5),
    KObject(
        {**_claim("other", "5", "x").raw, "spec": {"target": {"kind": "Mutex", "name": "gpu"}}}
    ),
]


def test_rows_count_holders_and_waiters() -> None:
    claims = _objects.claims_by_target(CLAIMS)
    mine = claims[_objects.target_of(SEM)]
    row = _objects.row(SEM, mine)
    assert (row["kind"], row["name"], row["phase"]) == ("semaphore", "gpu", "Full")
    assert (row["holders"], row["waiters"]) == (["h1", "h2"], 2)
    assert [c.name for c in _objects.queue(SEM, mine)] == ["gpu-h4", "gpu-h3"]
    assert _objects.row(SEM)["waiters"] == 0  # no claims given: nobody waits
    assert _objects.release_keys(SEM) == {"0#3": "h1", "1#4": "h2"}
    lease = KObject({"kind": "Lease", "metadata": {"name": "l"}, "status": {"holder": "x"}})
    assert _objects.holders(lease) == ["x"]


def test_object_view_has_a_table_per_entry_map() -> None:
    mine = _objects.claims_by_target(CLAIMS)[_objects.target_of(SEM)]
    text = _render(render_object(SEM, mine))
    assert "Semaphore ml/gpu" in text
    assert "holders (2)" in text
    assert "waiters (2, in service order)" in text
    assert text.index("gpu-h4") < text.index("gpu-h3")  # the queue in service order
    assert "gpu-granted" not in text.split("waiters")[1]
    table = _render(list_table([_objects.row(SEM, mine)]))
    assert "h1,h2" in table


def test_manifest_strips_server_fields() -> None:
    assert _objects.manifest(SEM.raw) == {
        "kind": "Semaphore",
        "metadata": {"name": "gpu", "namespace": "ml"},
        "spec": {"permits": 2},
    }


def test_namespace_column_only_across_namespaces() -> None:
    header = _render(list_table([_objects.row(SEM)])).splitlines()[0].split()
    assert header == ["KIND", "NAME", "PHASE", "HOLDERS", "WAITERS", "SUMMARY"]
    everywhere = _render(list_table([_objects.row(SEM)], namespaces=True)).splitlines()
    assert everywhere[0].split()[:3] == ["KIND", "NAMESPACE", "NAME"]
    assert everywhere[1].split()[:3] == ["semaphore", "ml", "gpu"]


def test_json_and_yaml_output_leave_managed_fields_out() -> None:
    raw = {**SEM.raw, "metadata": {**SEM.raw["metadata"], "managedFields": [{"manager": "x"}]}}
    shown = _objects.for_output(raw)
    assert "managedFields" not in shown["metadata"]
    assert shown["metadata"]["resourceVersion"] == "9"
    assert shown["status"] == SEM.raw["status"]
    assert "managedFields" in raw["metadata"]  # the object itself is untouched


@pytest.mark.parametrize(
    ("kind", "spec", "phase"),
    [
        ("Semaphore", {"permits": 2}, "Ready"),
        ("Mutex", {}, "Unlocked"),
        ("Barrier", {"expected": 2}, "Waiting"),
        ("Once", {}, "Pending"),
        ("Gate", {"conditions": [{"name": "a", "external": {}}]}, "Waiting"),
    ],
)
def test_phase_before_the_first_status_write_comes_from_the_kinds_rules(
    kind: str, spec: dict[str, object], phase: str
) -> None:
    fresh = KObject({"kind": kind, "metadata": {"name": "x"}, "spec": spec})
    assert _objects.phase(fresh) == phase
    written = KObject({**fresh.raw, "status": {"phase": "Custom"}})
    assert _objects.phase(written) == "Custom"
    broken = KObject({"kind": kind, "metadata": {"name": "x"}, "spec": {"permits": "many"}})
    assert isinstance(_objects.phase(broken), str)

"""Pure Gate state: three-valued tree evaluation against an independent model, normalize's
totality and idempotence, fingerprints, latch, terminal failure, timeouts, and a hypothesis
state machine over marks, observations and spec changes."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from konductor_sdk import ConfigurationError
from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines import gate as state
from konductor_sdk._machines.gate_spec import parse_spec, spec_hash
from konductor_sdk._machines.rules import base_status, registered

NOW = "2026-01-01T00:00:00.000000Z"
LATER = "2026-01-01T00:00:05.000000Z"

# -- an independent model of the logic --------------------------------------------------------


def model(node: dict[str, Any], leaf_states: dict[str, str]) -> str:
    """ "met" / "pending" / "impossible", by the rules in docs/gate.md, written separately."""
    if "group" not in node and "conditions" not in node:
        return leaf_states.get(node["name"], "pending")
    children = node["group"]["conditions"] if "group" in node else node["conditions"]
    match = node["group"].get("match", "all") if "group" in node else node.get("match", "all")
    states = [model(c, leaf_states) for c in children]
    if match == "all":
        if "impossible" in states:
            return "impossible"
        return "met" if all(s == "met" for s in states) else "pending"
    if "met" in states:
        return "met"
    return "impossible" if all(s == "impossible" for s in states) else "pending"


_names = iter(range(10**9))


@st.composite
def trees(draw: st.DrawFn, depth: int = 1) -> dict[str, Any]:
    n = draw(st.integers(1, 4))
    items: list[dict[str, Any]] = []
    for _ in range(n):
        if depth < state_max_depth() and draw(st.booleans()):
            sub = draw(trees(depth + 1))
            items.append({"name": f"g{next(_names)}", "group": sub})
        else:
            items.append({"name": f"c{next(_names)}", "external": {}})
    return {"match": draw(st.sampled_from(["all", "any"])), "conditions": items}


def state_max_depth() -> int:
    from konductor_sdk._machines.gate_spec import MAX_DEPTH

    return MAX_DEPTH


def entries_for(spec: dict[str, Any], leaf_states: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for leaf in parse_spec(spec).leaves:
        s = leaf_states.get(leaf.name, "pending")
        e = {
            "name": leaf.name,
            "type": "External",
            "met": s == "met",
            "message": s,
            "lastTransitionTime": NOW,
            "fingerprint": leaf.fingerprint,
        }
        if s == "impossible":
            e["failed"] = True
        out.append(e)
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_evaluation_matches_the_model(data: st.DataObject) -> None:
    spec = data.draw(trees())
    leaves = [leaf.name for leaf in parse_spec(spec).leaves]
    leaf_states = {n: data.draw(st.sampled_from(["met", "pending", "impossible"])) for n in leaves}
    status = state.normalize(spec, {"conditions": entries_for(spec, leaf_states)})
    expected = model(spec, leaf_states)
    assert (
        status["phase"] == {"met": "Open", "pending": "Waiting", "impossible": "Failed"}[expected]
    )
    if expected == "impossible":
        assert status["failure"]["reason"] == "ConditionFailed"
    if expected == "pending":
        # every leaf named as awaited is one that is not met
        waiting = status["message"].removeprefix("waiting for: ")
        assert all(leaf_states[n] != "met" for n in waiting.split(", ") if n in leaf_states)
    assert state.normalize(spec, status) == status  # idempotent


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(spec=json_values, status=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_normalize_is_total_and_idempotent_on_garbage(spec: Any, status: dict[str, Any]) -> None:
    spec = spec if isinstance(spec, dict) else {"conditions": spec}
    out = state.normalize(spec, status)
    assert out["phase"] in ("Waiting", "Open", "Failed")
    assert state.normalize(spec, out) == out


SPEC: dict[str, Any] = {
    "conditions": [
        {"name": "a", "external": {}},
        {"name": "j", "job": {"name": "build", "state": "Complete"}},
    ]
}


def leaf_print(spec: dict[str, Any], name: str) -> str:
    leaf = parse_spec(spec).leaf(name)
    assert leaf is not None
    return leaf.fingerprint


def test_stale_entries_never_count() -> None:
    s = state.apply_results(SPEC, {}, {"j": state.LeafResult(True, "ok")}, generation=1, now=NOW)
    s = state.mark(
        SPEC, s, "a", met=True, message="", marked_by={"holder": "x"}, generation=1, now=NOW
    )
    assert s["phase"] == "Open"
    changed = copy.deepcopy(SPEC)
    changed["conditions"][1]["job"]["name"] = "other-build"
    after = state.normalize(changed, s)
    assert after["phase"] == "Waiting"  # j was evaluated for the old job
    assert after["message"] == "waiting for: j"
    assert after["met"] == "1/2"


def test_latch_keeps_open_only_for_the_same_spec() -> None:
    spec = {**SPEC, "latch": True}
    s = state.apply_results(spec, {}, {"j": state.LeafResult(True, "ok")}, generation=1, now=NOW)
    s = state.mark(spec, s, "a", met=True, message="", marked_by={}, generation=1, now=LATER)
    assert (s["phase"], s["openedAt"], s["openCount"]) == ("Open", LATER, 1)
    s = state.mark(spec, s, "a", met=False, message="", marked_by={}, generation=1, now=LATER)
    assert (s["phase"], s["openedAt"], s["openCount"]) == ("Open", LATER, 1)
    unlatched = {**spec, "latch": False}
    assert state.normalize(unlatched, s)["phase"] == "Waiting"
    s2 = state.normalize({**SPEC}, s)
    assert "openedAt" not in s2


def test_a_spec_edited_back_and_forth_is_judged_afresh() -> None:
    spec = {**SPEC, "latch": True}
    s = state.apply_results(spec, {}, {"j": state.LeafResult(True, "ok")}, generation=1, now=NOW)
    s = state.mark(spec, s, "a", met=True, message="", marked_by={}, generation=1, now=NOW)
    s = state.mark(spec, s, "a", met=False, message="", marked_by={}, generation=1, now=NOW)
    s = state.normalize(spec, {**s, "specGeneration": 1})
    assert s["phase"] == "Open"  # latched
    # A -> B -> A with nobody writing the status in between: the content is the same as
    # when it latched, but it is a new generation of the spec, so the latch is gone.
    assert state.judge(obj(spec, s, generation=1))["phase"] == "Open"
    assert state.judge(obj(spec, s, generation=3))["phase"] == "Waiting"
    failed = state.normalize(
        spec, {**s, "failure": {"reason": "Timeout", "specHash": s["specHash"]}}
    )
    assert state.judge(obj(spec, failed, generation=1))["phase"] == "Failed"
    assert state.judge(obj(spec, failed, generation=3))["phase"] == "Waiting"


def test_a_latch_readers_saw_open_holds_without_a_write() -> None:
    spec = {**SPEC, "latch": True}
    s = state.apply_results(spec, {}, {"j": state.LeafResult(True, "ok")}, generation=1, now=NOW)
    s = state.mark(spec, s, "a", met=True, message="", marked_by={}, generation=1, now=NOW)
    edited = obj(spec, s, generation=2)  # spec edited (and back): nobody wrote since
    assert state.judge(edited)["phase"] == "Open"  # what a waiter sees, and may act on
    after = state.mark(
        spec, state.judge(edited), "a", met=False, message="", marked_by={}, generation=2, now=LATER
    )
    assert after["phase"] == "Open"
    assert state.judge(obj(spec, after, generation=2))["phase"] == "Open"


def test_failure_is_final_for_its_spec_and_names_the_cause() -> None:
    s = state.apply_results(
        SPEC,
        {},
        {"j": state.LeafResult(False, "Job build ended Failed", failed=True)},
        generation=1,
        now=NOW,
    )
    assert s["phase"] == "Failed"
    assert "j: Job build ended Failed" in s["message"]
    s = state.apply_results(SPEC, s, {"j": state.LeafResult(True, "ok")}, generation=1, now=LATER)
    s = state.mark(SPEC, s, "a", met=True, message="", marked_by={}, generation=1, now=LATER)
    assert s["phase"] == "Failed"
    assert state.normalize({**SPEC, "latch": True}, s)["phase"] == "Open"  # new spec: afresh


def test_transition_time_moves_only_on_change_and_marks_win() -> None:
    s = state.apply_results(SPEC, {}, {"j": state.LeafResult(False, "1")}, generation=1, now=NOW)
    s = state.apply_results(SPEC, s, {"j": state.LeafResult(False, "2")}, generation=2, now=LATER)
    j = next(e for e in s["conditions"] if e["name"] == "j")
    assert (j["lastTransitionTime"], j["message"], j["observedGeneration"]) == (NOW, "2", 2)
    a = next(e for e in s["conditions"] if e["name"] == "a")
    assert (a["met"], a["message"]) == (False, "not marked yet")
    s = state.mark(
        SPEC, s, "a", met=True, message="go", marked_by={"username": "u"}, generation=2, now=LATER
    )
    s = state.apply_results(SPEC, s, {}, generation=2, now=LATER)  # observers keep marks
    a = next(e for e in s["conditions"] if e["name"] == "a")
    assert (a["met"], a["markedBy"]) == (True, {"username": "u"})


def test_mark_refuses_non_external_conditions() -> None:
    with pytest.raises(ConfigurationError, match="external condition of this gate"):
        state.mark(SPEC, {}, "j", met=True, message="", marked_by={}, generation=1, now=NOW)


def obj(spec: dict[str, Any], status: dict[str, Any], generation: int = 1) -> KObject:
    md = {"uid": "u1", "name": "g", "namespace": "n", "generation": generation}
    return KObject({"metadata": md, "spec": spec, "status": status})


def test_timeout_names_what_it_waits_for_and_episodes() -> None:
    rules = registered()["Gate"]
    spec = {**SPEC, "timeoutSeconds": 30}
    s = state.mark(spec, {}, "a", met=True, message="", marked_by={}, generation=1, now=NOW)
    assert rules.timer is not None
    assert rules.on_timeout is not None
    timer = rules.timer(obj(spec, s))
    assert timer is not None
    assert timer[1] == 30.0
    failed = rules.on_timeout(obj(spec, s))
    assert failed is not None
    assert failed["phase"] == "Failed"
    assert failed["failure"]["reason"] == "Timeout"
    assert failed["message"].endswith("waiting for: j")
    assert rules.timer(obj(spec, failed)) is None
    opened = state.apply_results(spec, s, {"j": state.LeafResult(True, "")}, generation=1, now=NOW)
    assert rules.timer(obj(spec, opened)) is None
    assert rules.on_timeout(obj(spec, opened)) is None
    closed = state.mark(
        spec, opened, "a", met=False, message="", marked_by={}, generation=1, now=LATER
    )
    again = rules.timer(obj(spec, closed))
    assert again is not None
    assert again[0] != timer[0]
    assert rules.describe is not None
    assert "Waiting" in rules.describe(obj(spec, closed))
    assert rules.gauges is not None
    assert rules.gauges(obj(spec, opened))["open"] == 1.0


class GateMachine(RuleBasedStateMachine):
    """Marks, observations and spec edits in any order: the phase always follows the model,
    Failed is final for its spec, openCount never decreases, normalize stays idempotent."""

    SPEC_A: ClassVar[dict[str, Any]] = {
        "conditions": [
            {"name": "x", "external": {}},
            {
                "name": "g",
                "group": {
                    "match": "any",
                    "conditions": [
                        {"name": "y", "external": {}},
                        {"name": "j", "job": {"name": "build"}},
                    ],
                },
            },
        ],
    }

    def __init__(self) -> None:
        super().__init__()
        self.spec: dict[str, Any] = copy.deepcopy(self.SPEC_A)
        self.status: dict[str, Any] = {}
        self.leaf: dict[str, str] = {}
        self.failed_for: str | None = None
        self.was_open = False
        self.open_count = 0

    def _apply(self, new: dict[str, Any]) -> None:
        assert new.get("openCount", 0) >= self.status.get("openCount", 0)
        self.status = new

    @rule(name=st.sampled_from(["x", "y"]), met=st.booleans())
    def mark(self, name: str, met: bool) -> None:
        self._apply(
            state.mark(
                self.spec,
                self.status,
                name,
                met=met,
                message="",
                marked_by={},
                generation=1,
                now=NOW,
            )
        )
        self.leaf[name] = "met" if met else "pending"

    @rule(outcome=st.sampled_from(["met", "pending", "impossible"]))
    def observe_job(self, outcome: str) -> None:
        result = state.LeafResult(outcome == "met", outcome, failed=outcome == "impossible")
        self._apply(
            state.apply_results(self.spec, self.status, {"j": result}, generation=1, now=NOW)
        )
        self.leaf["j"] = outcome

    @rule(latch=st.booleans())
    def edit_spec(self, latch: bool) -> None:
        if self.spec.get("latch", False) == latch:
            return
        self.spec = {**self.spec, "latch": latch}
        self._apply(state.normalize(self.spec, self.status))
        self.failed_for = None
        self.was_open = False

    @invariant()
    def follows_model(self) -> None:
        if not self.status:
            return
        expected = model(self.spec, self.leaf)
        h = spec_hash(self.spec)
        if self.failed_for == h:
            assert self.status["phase"] == "Failed"
            return
        if expected == "impossible":
            assert self.status["phase"] == "Failed"
            self.failed_for = h
        elif expected == "met":
            assert self.status["phase"] == "Open"
            self.was_open = True
        elif self.spec.get("latch") and self.was_open:
            assert self.status["phase"] == "Open"
        else:
            assert self.status["phase"] == "Waiting"
            self.was_open = False
        assert state.normalize(self.spec, self.status) == self.status


TestGateMachine = GateMachine.TestCase
TestGateMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


class WritersMachine(RuleBasedStateMachine):
    """The three writers of one stored latched gate in any order: markers (only their
    entry), the operator's generic repair (``KindRules.rebase`` + ``normalize``) and the gate
    controller (``apply_results`` over ``judge``), with spec edits between. What readers judge
    follows the model; once an operator write recorded the opening (markers write only their
    entry, docs/gate.md), the latch holds for that generation without its count moving; and
    every operator write stores exactly what readers judge."""

    def __init__(self) -> None:
        super().__init__()
        self.rules = registered()["Gate"]
        self.spec: dict[str, Any] = {
            "latch": True,
            "conditions": [{"name": "a", "external": {}}, {"name": "b", "external": {}}],
        }
        self.generation = 1
        self.status: dict[str, Any] = {}
        self.leaf: dict[str, bool] = {}
        self.opened: tuple[int, int] | None = None  # (generation, openCount) recorded Open

    def _obj(self) -> KObject:
        return obj(self.spec, self.status, self.generation)

    def _recorded(self) -> None:
        assert state.judge(self._obj()) == self.status
        if self.status["phase"] == "Open" and self.opened is None:
            self.opened = (self.generation, self.status["openCount"])

    @rule(name=st.sampled_from(["a", "b"]), met=st.booleans())
    def mark(self, name: str, met: bool) -> None:
        new = state.mark_write(self._obj(), name, met=met, message="", marked_by={}, now=NOW)
        if new is not None:
            changed = [e for e in new["conditions"] if e not in self.status.get("conditions", [])]
            assert [e["name"] for e in changed] == [name]
            assert {k: v for k, v in new.items() if k != "conditions"} == {
                k: v for k, v in self.status.items() if k != "conditions"
            }
            self.status = new
        self.leaf[name] = met

    @rule()
    def operator_repair(self) -> None:
        fresh = self._obj()
        self.status = self.rules.normalize(self.spec, base_status(self.rules, fresh))
        self._recorded()

    @rule()
    def controller_write(self) -> None:
        fresh = self._obj()
        self.status = state.apply_results(
            self.spec, state.judge(fresh), {}, generation=self.generation, now=LATER
        )
        self._recorded()

    @rule()
    def edit_spec(self) -> None:
        # A -> B -> A: the same content comes back under a new generation.
        if "timeoutSeconds" in self.spec:
            self.spec = {k: v for k, v in self.spec.items() if k != "timeoutSeconds"}
        else:
            self.spec = {**self.spec, "timeoutSeconds": 3600}
        self.generation += 1
        self.opened = None

    @invariant()
    def readers_see_the_latch(self) -> None:
        judged = state.judge(self._obj())
        both = self.leaf.get("a", False) and self.leaf.get("b", False)
        if self.opened is not None and self.opened[0] == self.generation:
            assert judged["phase"] == "Open"
            assert judged["openCount"] == self.opened[1]
        elif both:
            assert judged["phase"] == "Open"
        else:
            assert judged["phase"] == "Waiting"


TestWritersMachine = WritersMachine.TestCase
TestWritersMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)

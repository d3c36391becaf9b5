"""The Gate's spec: the condition tree, parsed and validated.

One parser serves the SDK (``Gate.create`` validates before anything is written, naming the
field path and the allowed range), the pure state functions (:mod:`._gate_state`) and the
operator. It enforces what the CRD enforces plus what a structural schema cannot: names
unique across the whole tree and at most :data:`MAX_CONDITIONS` named items in all.
Each leaf carries a *fingerprint* (a hash of its spec) so status entries evaluated for an
older version of a leaf are recognised as stale.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.limits import MAX_EXPRESSION as MAX_EXPRESSION

Spec = Mapping[str, Any]

MAX_DEPTH: Final = 3
LEVEL_MAX_ITEMS: Final = (32, 16, 16)
MAX_CONDITIONS: Final = 64  # named items in the whole tree, groups included
MAX_TIMEOUT_SECONDS: Final = 30 * 86_400
MATCHES: Final = ("all", "any")

# spec key -> status ``type``
TYPES: Final = {
    "job": "Job",
    "barrier": "Barrier",
    "semaphore": "Semaphore",
    "lease": "Lease",
    "gate": "Gate",
    "once": "Once",
    "waitGroup": "WaitGroup",
    "object": "Object",
    "external": "External",
    "http": "HTTP",
}
GROUP: Final = "group"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_API_VERSION = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+([a-z]+[0-9]+)?$")
_URL = re.compile(r"^https?://\S+$")

# Per type: field -> (checker, default). ``None`` default: optional without default.
_REF = {"name": ("object", None), "namespace": ("namespace", None)}
_PARAMS: Final[dict[str, dict[str, tuple[Any, Any]]]] = {
    "job": {**_REF, "state": (("Complete", "Failed"), "Complete")},
    "barrier": {**_REF, "state": (("Open", "Failed"), "Open")},
    "semaphore": {**_REF, "minAvailable": ((1, 1_000_000), 1)},
    "lease": {**_REF, "state": (("Held", "Free"), "Held")},
    "gate": dict(_REF),
    "once": dict(_REF),
    "waitGroup": dict(_REF),
    "object": {
        **_REF,
        "apiVersion": ("apiVersion", None),
        "kind": ("kind", None),
        "expression": ("expression", None),
    },
    "external": {},
    "http": {
        "url": ("url", None),
        "expectStatus": ((100, 599), 200),
        "jsonField": ("text", None),
        "jsonValue": ("text", None),
        "intervalSeconds": ((1, 3600), 10),
        "timeoutSeconds": ((1, 60), 5),
    },
}
_REQUIRED: Final = {
    **dict.fromkeys(
        ("job", "barrier", "semaphore", "lease", "gate", "once", "waitGroup"), ("name",)
    ),
    "object": ("apiVersion", "kind", "name", "expression"),
    "external": (),
    "http": ("url",),
}


class SpecError(ConfigurationError):
    """The gate's spec is not valid; the message names the field path."""


def canonical_hash(value: Any) -> str:
    """A short, stable hash of JSON data (keys sorted)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@attrs.frozen
class Leaf:
    """One named condition: ``type`` is the spec key (``job``...), ``params`` has defaults."""

    name: str
    type: str
    params: Mapping[str, Any]
    fingerprint: str
    path: str

    @property
    def type_name(self) -> str:
        return TYPES[self.type]


@attrs.frozen
class Group:
    name: str
    match: str
    children: tuple[Leaf | Group, ...]


@attrs.frozen
class GateSpec:
    root: Group
    leaves: tuple[Leaf, ...]
    latch: bool
    timeout_seconds: int | None
    hash: str

    def leaf(self, name: str) -> Leaf | None:
        return next((leaf for leaf in self.leaves if leaf.name == name), None)


def _int(value: Any, lo: int, hi: int, field: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"{field} must be an integer in {lo}..{hi}, got {value!r}")
    return value


_TEXT_RULES: Final[dict[str, Callable[[str], object]]] = {
    "object": lambda v: len(v) <= 253 and _SUBDOMAIN.match(v),
    "namespace": lambda v: len(v) <= 63 and _NAME.match(v),
    "apiVersion": lambda v: len(v) <= 253 and _API_VERSION.match(v),
    "kind": lambda v: len(v) <= 63 and _KIND.match(v),
    "expression": lambda v: len(v) <= MAX_EXPRESSION,
    "url": lambda v: len(v) <= 2048 and _URL.match(v),
    "text": lambda v: len(v) <= 256,
}


def _check(rule: Any, value: Any, field: str) -> Any:
    if isinstance(rule, tuple) and isinstance(rule[0], int):
        return _int(value, rule[0], rule[1], field)
    if isinstance(rule, tuple):
        if value not in rule:
            raise SpecError(f"{field} must be one of {', '.join(rule)}, got {value!r}")
        return value
    if not isinstance(value, str) or not value:
        raise SpecError(f"{field} must be a non-empty string, got {value!r}")
    ok = _TEXT_RULES[rule](value)
    if not ok:
        what = {
            "object": "an object name (DNS subdomain, at most 253 characters)",
            "namespace": "a namespace name (DNS label, at most 63 characters)",
            "apiVersion": "an apiVersion such as v1 or apps/v1",
            "kind": "a kind such as Deployment",
            "expression": f"a CEL expression of at most {MAX_EXPRESSION} characters",
            "url": "an http:// or https:// URL of at most 2048 characters",
            "text": "a string of at most 256 characters",
        }[rule]
        raise SpecError(f"{field} must be {what}, got {value!r}")
    return value


def _parse_leaf(item: Mapping[str, Any], kind: str, name: str, path: str) -> Leaf:
    raw = item[kind]
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}.{kind} must be an object, got {raw!r}")
    rules = _PARAMS[kind]
    unknown = sorted(set(raw) - set(rules))
    if unknown:
        raise SpecError(f"{path}.{kind}: unknown field(s) {', '.join(unknown)}")
    params: dict[str, Any] = {}
    for field, (rule, default) in rules.items():
        if field in raw:
            params[field] = _check(rule, raw[field], f"{path}.{kind}.{field}")
        elif field in _REQUIRED[kind]:
            raise SpecError(f"{path}.{kind}.{field} is required")
        elif default is not None:
            params[field] = default
    if kind == "http":
        if "jsonValue" in params and "jsonField" not in params:
            raise SpecError(f"{path}.http.jsonValue needs {path}.http.jsonField")
        if params["timeoutSeconds"] > params["intervalSeconds"]:
            raise SpecError(
                f"{path}.http.timeoutSeconds must be <= intervalSeconds "
                f"({params['intervalSeconds']}), got {params['timeoutSeconds']}"
            )
    return Leaf(name, kind, params, canonical_hash(dict(item)), path)


def _parse_items(
    items: Any, level: int, path: str, names: set[str], leaves: list[Leaf]
) -> tuple[Leaf | Group, ...]:
    limit = LEVEL_MAX_ITEMS[level - 1]
    if not isinstance(items, Sequence) or isinstance(items, str) or not 1 <= len(items) <= limit:
        raise SpecError(f"{path} must be a list of 1..{limit} conditions, got {items!r}")
    out: list[Leaf | Group] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(f"{where} must be an object, got {item!r}")
        name = item.get("name")
        if not isinstance(name, str) or len(name) > 63 or not _NAME.match(name):
            raise SpecError(
                f"{where}.name must be a DNS label (lowercase alphanumerics and '-', at most "
                f"63 characters), got {name!r}"
            )
        if name in names:
            raise SpecError(f"{where}.name: {name!r} is used twice (names are unique per gate)")
        names.add(name)
        if len(names) > MAX_CONDITIONS:
            raise SpecError(f"a gate may have at most {MAX_CONDITIONS} conditions, groups included")
        kinds = [k for k in (*TYPES, GROUP) if k in item]
        unknown = sorted(set(item) - {"name", *TYPES, GROUP})
        if unknown:
            raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}")
        if len(kinds) != 1:
            raise SpecError(
                f"{where} ({name}) must set exactly one of {', '.join((*TYPES, GROUP))}, "
                f"got {kinds or 'none'}"
            )
        if kinds[0] != GROUP:
            leaf = _parse_leaf(item, kinds[0], name, where)
            leaves.append(leaf)
            out.append(leaf)
            continue
        if level >= MAX_DEPTH:
            raise SpecError(f"{where}.group: groups nest at most {MAX_DEPTH} levels deep")
        group = item[GROUP]
        if not isinstance(group, Mapping) or set(group) - {"match", "conditions"}:
            raise SpecError(f"{where}.group must be {{match, conditions}}, got {group!r}")
        match = _check(MATCHES, group.get("match", "all"), f"{where}.group.match")
        children = _parse_items(
            group.get("conditions"), level + 1, f"{where}.group.conditions", names, leaves
        )
        out.append(Group(name, match, children))
    return tuple(out)


def parse_spec(spec: Spec) -> GateSpec:
    """Parse and validate a gate spec (the CRD's rules plus the cross-level ones).

    Raises:
        SpecError: naming the field path and the allowed range.
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec must be an object, got {spec!r}")
    match = _check(MATCHES, spec.get("match", "all"), "spec.match")
    leaves: list[Leaf] = []
    children = _parse_items(spec.get("conditions"), 1, "spec.conditions", set(), leaves)
    latch = spec.get("latch", False)
    if not isinstance(latch, bool):
        raise SpecError(f"spec.latch must be a boolean, got {latch!r}")
    timeout = spec.get("timeoutSeconds")
    if timeout is not None:
        timeout = _int(timeout, 1, MAX_TIMEOUT_SECONDS, "spec.timeoutSeconds")
    return GateSpec(Group("", match, children), tuple(leaves), latch, timeout, spec_hash(spec))


def spec_hash(spec: Spec) -> str:
    return canonical_hash(dict(spec))

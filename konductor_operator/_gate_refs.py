"""What a Gate's conditions point at, how the operator judges them, and who may look.

* :func:`target_of` / :class:`KindResolver`: a leaf's referenced object as a
  ``(ResourceKind, namespace, name)``; plurals of arbitrary kinds come from discovery.
* :func:`judge`: a referenced object (or its absence) -> :class:`LeafResult`, pure, using
  the primitives' own state functions so a Gate reads a Semaphore exactly as the
  Semaphore's users do.
* :class:`AccessGuard`: references are checked against the RBAC of the gate's *verified*
  creator with a SubjectAccessReview. ``spec.creator`` is verified only while the
  ValidatingAdmissionPolicy :data:`POLICY_NAME` (shipped here, installed by the operator
  when it may) is in force: that policy makes the API server itself reject a spec whose
  ``creator`` is not the authenticated user writing it (checked field by field:
  :func:`policy_problem`). Without it, no creator is trusted:
  references stay in the gate's own namespace, cross-namespace ones are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, final

import attrs
import yaml

from konductor_sdk._kernel.clock import Clock
from konductor_sdk._kernel.errors import AlreadyExistsError, APIError, ForbiddenError, NotFoundError
from konductor_sdk._kernel.objects import (
    BARRIER,
    GATE,
    JOB,
    LEASE,
    ONCE,
    SELF_SUBJECT_ACCESS_REVIEW,
    SEMAPHORE,
    SUBJECT_ACCESS_REVIEW,
    WAITGROUP,
    KObject,
    ResourceKind,
)
from konductor_sdk._kernel.store import Discovery, Store
from konductor_sdk._machines import barrier as _barrier_state
from konductor_sdk._machines import gate as gate_state
from konductor_sdk._machines import lease as _lease_state
from konductor_sdk._machines import once as _once_state
from konductor_sdk._machines import waitgroup as _waitgroup_state
from konductor_sdk._machines.gate import LeafResult
from konductor_sdk._machines.gate_spec import Leaf
from konductor_sdk._machines.semaphore import SEMAPHORE_FLAVOR, normalize_for

log = logging.getLogger("konductor_operator.gate")

KINDS: Final = {
    "job": JOB,
    "barrier": BARRIER,
    "semaphore": SEMAPHORE,
    "lease": LEASE,
    "gate": GATE,
    "once": ONCE,
    "waitGroup": WAITGROUP,
}
POLICY_NAME: Final = "konductor-gate-creator"
VAP: Final = ResourceKind(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicies",
    "ValidatingAdmissionPolicy",
    False,
)
VAP_BINDING: Final = ResourceKind(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicybindings",
    "ValidatingAdmissionPolicyBinding",
    False,
)
# Whoever writes a Gate's spec must record themselves as spec.creator; metadata and status
# writes (marks) are not affected. This is what lets the operator trust spec.creator. The
# policy and its binding are read from policies/gate-creator.yaml (shipped in this package),
# the same file deploy/ and the Helm chart are generated from.
POLICY_FILE: Final = Path(__file__).resolve().parent / "policies" / "gate-creator.yaml"


def _load_policy(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]

    def body(doc: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": doc["metadata"]["name"]}, "spec": doc["spec"]}

    policies = [
        body(d) for d in docs if d.get("kind") == VAP.kind and d["metadata"]["name"] == POLICY_NAME
    ]
    bindings = [
        body(d)
        for d in docs
        if d.get("kind") == VAP_BINDING.kind and d["spec"].get("policyName") == POLICY_NAME
    ]
    if len(policies) != 1 or len(bindings) != 1:
        raise RuntimeError(f"{path} must hold one {POLICY_NAME} policy and one binding")
    return policies[0], bindings[0]


POLICY, BINDING = _load_policy(POLICY_FILE)


def _covers(rules: Any, wanted: Mapping[str, Any]) -> bool:
    """Whether one of ``rules`` (resourceRules) matches everything ``wanted`` matches."""

    def has(values: Any, items: Any) -> bool:
        values = list(values or ())
        return "*" in values or all(item in values for item in items)

    for rule in rules or ():
        if (
            isinstance(rule, Mapping)
            and not rule.get("resourceNames")
            and rule.get("scope", "*") in ("*", "Namespaced")
            and all(
                has(rule.get(key), wanted[key])
                for key in ("apiGroups", "apiVersions", "operations", "resources")
            )
        ):
            return True
    return False


def _unselective(selector: Any) -> bool:
    return not selector or (
        isinstance(selector, Mapping)
        and not selector.get("matchLabels")
        and not selector.get("matchExpressions")
    )


def policy_problem(policy: Mapping[str, Any], binding: Mapping[str, Any]) -> str | None:
    """Why the live ``policy``/``binding`` do not enforce :data:`POLICY`, or ``None``.

    Existence is not enough: the live objects must carry the expected validation
    expressions, fail closed, match every CREATE/UPDATE of gates (no narrowing selectors,
    exclusions, match conditions or parameters), and be bound with ``Deny`` for every
    namespace. Fields the API server defaults (``matchPolicy``, empty selectors,
    ``scope: "*"``) are accepted.
    """
    spec, want = policy.get("spec") or {}, POLICY["spec"]
    live = {v.get("expression") for v in spec.get("validations") or () if isinstance(v, Mapping)}
    missing = [v["expression"] for v in want["validations"] if v["expression"] not in live]
    if missing:
        return f"policy {POLICY_NAME} does not carry the expected validation expression"
    if spec.get("failurePolicy", "Fail") != "Fail":
        return f"policy {POLICY_NAME} has failurePolicy {spec.get('failurePolicy')}, not Fail"
    if spec.get("paramKind") or spec.get("matchConditions"):
        return f"policy {POLICY_NAME} is narrowed by matchConditions or paramKind"
    match = spec.get("matchConstraints") or {}
    if (
        match.get("excludeResourceRules")
        or not _unselective(match.get("namespaceSelector"))
        or not _unselective(match.get("objectSelector"))
    ):
        return f"policy {POLICY_NAME} excludes some gates (selectors or exclusions)"
    for wanted in want["matchConstraints"]["resourceRules"]:
        if not _covers(match.get("resourceRules"), wanted):
            return f"policy {POLICY_NAME} does not match every CREATE/UPDATE of gates"
    bspec = binding.get("spec") or {}
    if bspec.get("policyName") != POLICY_NAME or "Deny" not in (
        bspec.get("validationActions") or ()
    ):
        return f"binding {POLICY_NAME} does not deny"
    if bspec.get("paramRef"):
        return f"binding {POLICY_NAME} uses parameters"
    scope = bspec.get("matchResources")
    if scope:
        if (
            scope.get("excludeResourceRules")
            or not _unselective(scope.get("namespaceSelector"))
            or not _unselective(scope.get("objectSelector"))
        ):
            return f"binding {POLICY_NAME} applies to some namespaces or objects only"
        if scope.get("resourceRules") and not all(
            _covers(scope["resourceRules"], w) for w in want["matchConstraints"]["resourceRules"]
        ):
            return f"binding {POLICY_NAME} does not match every CREATE/UPDATE of gates"
    return None


SAR_TTL_SECONDS: Final = 30.0
POLICY_TTL_SECONDS: Final = 30.0
DISCOVERY_TTL_SECONDS: Final = 300.0


@attrs.frozen
class Target:
    """A referenced object; ``namespace`` is ``""`` for a cluster-scoped kind."""

    kind: ResourceKind
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.kind} {where}{self.name}"


@attrs.frozen
class Creator:
    username: str
    groups: tuple[str, ...]


# -- judging referenced objects --------------------------------------------------------------


def _job(leaf: Leaf, obj: KObject, what: str) -> LeafResult:
    true = {
        str(c.get("type"))
        for c in obj.status.get("conditions") or ()
        if isinstance(c, Mapping) and c.get("status") == "True"
    }
    want = str(leaf.params["state"])
    other = "Failed" if want == "Complete" else "Complete"
    if want in true:
        return LeafResult(True, f"{what}: {want}")
    if other in true:
        return LeafResult(False, f"{what} ended {other}, not {want}", failed=True)
    return LeafResult(False, f"{what}: not finished")


def _barrier(leaf: Leaf, obj: KObject, what: str) -> LeafResult:
    s = _barrier_state.normalize(obj.spec, obj.status)
    want = str(leaf.params["state"])
    text = f"{what}: generation {s.get('generation')} {s.get('phase')}"
    return LeafResult(s.get("phase") == want, f"{text} (want {want})")


def _semaphore(leaf: Leaf, obj: KObject, what: str) -> LeafResult:
    s = normalize_for(SEMAPHORE_FLAVOR)(obj.spec, dict(obj.status))
    available, need = int(s.get("available", 0)), int(leaf.params["minAvailable"])
    return LeafResult(available >= need, f"{what}: {available} available (need {need})")


def _lease(leaf: Leaf, obj: KObject, what: str) -> LeafResult:
    holder = _lease_state.holder_entry(obj.status)
    held = holder is not None
    want = str(leaf.params["state"])
    text = f"{what}: held by {holder[1].get('holder')}" if holder else f"{what}: free"
    return LeafResult(held == (want == "Held"), f"{text} (want {want})")


def _gate(leaf: Leaf, obj: KObject, what: str) -> LeafResult:
    s = gate_state.judge(obj)
    if s["phase"] == gate_state.OPEN:
        return LeafResult(True, f"{what}: Open")
    if s["phase"] == gate_state.FAILED:
        return LeafResult(False, f"{what} failed: {s.get('message', '')}", failed=True)
    return LeafResult(False, f"{what}: {s.get('message', 'waiting')}")


def _once(leaf: Leaf, obj: KObject, what: str) -> LeafResult:
    s = _once_state.normalize(obj.spec, obj.status)
    # A failed Once may be reset and run again: not impossible, only not done.
    return LeafResult(s.get("phase") == _once_state.DONE, f"{what}: {s.get('phase')}")


def _waitgroup(leaf: Leaf, obj: KObject, what: str) -> LeafResult:
    s = _waitgroup_state.normalize(obj.spec, obj.status)
    return LeafResult(s.get("counter") == 0, f"{what}: counter {s.get('counter')}")


_JUDGES: Final = {
    "job": _job,
    "barrier": _barrier,
    "semaphore": _semaphore,
    "lease": _lease,
    "gate": _gate,
    "once": _once,
    "waitGroup": _waitgroup,
}


def judge(leaf: Leaf, target: Target, obj: KObject | None) -> LeafResult:
    """The leaf's result given its referenced object (``None``: it does not exist)."""
    what = str(target)
    if obj is None:
        return LeafResult(False, f"{what} not found")
    try:
        return _JUDGES[leaf.type](leaf, obj, what)
    except Exception as exc:  # a malformed referenced object must not stop the gate
        return LeafResult(False, f"{what}: cannot read its status ({exc!r})"[:1024])


# -- finding referenced objects --------------------------------------------------------------


@final
class KindResolver:
    """apiVersion + kind -> :class:`ResourceKind`, from discovery (cached)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, dict[str, ResourceKind]]] = {}

    async def resolve(self, api_version: str, kind: str) -> ResourceKind:
        """Raises :class:`LookupError` with a message for the gate's status."""
        group, _, version = api_version.rpartition("/")
        key = (group, version)
        cached = self._cache.get(key)
        now = self._clock.monotonic()
        if cached is not None and kind in cached[1]:
            return cached[1][kind]
        if cached is not None and now - cached[0] < DISCOVERY_TTL_SECONDS / 10:
            raise LookupError(f"kind {kind} is not served by {api_version}")
        if not isinstance(self._store, Discovery):
            raise LookupError("this operator's store cannot discover arbitrary kinds")
        try:
            resources = await self._store.discover(group, version)
        except NotFoundError:
            raise LookupError(f"apiVersion {api_version} is not served") from None
        kinds = {
            str(r["kind"]): ResourceKind(
                group, version, str(r["name"]), str(r["kind"]), bool(r.get("namespaced"))
            )
            for r in resources
            if "/" not in str(r.get("name", "")) and r.get("kind")
        }
        self._cache[key] = (now, kinds)
        if kind not in kinds:
            raise LookupError(f"kind {kind} is not served by {api_version}")
        return kinds[kind]


async def target_of(leaf: Leaf, gate_namespace: str, resolver: KindResolver) -> Target:
    """The object ``leaf`` references. Raises :class:`LookupError` (unknown kind)."""
    params = leaf.params
    if leaf.type == "object":
        kind = await resolver.resolve(str(params["apiVersion"]), str(params["kind"]))
    else:
        kind = KINDS[leaf.type]
    namespace = str(params.get("namespace") or gate_namespace) if kind.namespaced else ""
    return Target(kind, namespace, str(params["name"]))


# -- who may look ----------------------------------------------------------------------------


@final
class AccessGuard:
    """Decides whether a gate may observe a target, on behalf of its verified creator."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._sar: dict[tuple[Creator, Target], tuple[float, bool, str]] = {}
        self._policy_checked = -1e18
        self.policy_active = False
        self.policy_error = "not checked yet"

    async def ensure_policy(self, *, install: bool) -> bool:
        """Check (and, if ``install`` and allowed, create) the creator policy + binding."""
        self._policy_checked = self._clock.monotonic()
        live: list[KObject] = []
        try:
            for kind, body in ((VAP, POLICY), (VAP_BINDING, BINDING)):
                try:
                    obj = await self._store.get(kind, None, POLICY_NAME)
                except NotFoundError:
                    if not install:
                        raise
                    try:
                        obj = await self._store.create(kind, None, body)
                    except AlreadyExistsError:
                        obj = await self._store.get(kind, None, POLICY_NAME)
                live.append(obj)
        except APIError as exc:
            self.policy_active = False
            self.policy_error = f"{type(exc).__name__}: {exc}"[:300]
            return False
        problem = policy_problem(live[0].raw, live[1].raw)
        if problem is not None:
            if self.policy_active or self.policy_error != problem:
                log.warning("gate creator policy not trusted: %s", problem)
            self.policy_active, self.policy_error = False, problem
            return False
        self.policy_active, self.policy_error = True, ""
        return True

    async def refresh_policy(self) -> None:
        if self._clock.monotonic() - self._policy_checked >= POLICY_TTL_SECONDS:
            await self.ensure_policy(install=False)

    def creator(self, gate: KObject) -> Creator | None:
        """The gate's creator, if recorded *and* verifiable (the policy is in force)."""
        raw = gate.spec.get("creator")
        if not self.policy_active or not isinstance(raw, Mapping) or not raw.get("username"):
            return None
        return Creator(str(raw["username"]), tuple(str(g) for g in raw.get("groups") or ()))

    async def denied(self, gate: KObject, target: Target) -> str | None:
        """``None`` if the gate may observe ``target``, else why not (for its status)."""
        creator = self.creator(gate)
        if creator is None:
            if target.namespace == gate.namespace:
                return None  # the default: a gate sees its own namespace
            where = f"namespace {target.namespace}" if target.namespace else "cluster scope"
            return (
                f"reference to {target} in {where} refused: the gate has no verified "
                f"spec.creator (policy {POLICY_NAME}: "
                f"{'in force' if self.policy_active else self.policy_error or 'absent'})"
            )
        key = (creator, target)
        now = self._clock.monotonic()
        cached = self._sar.get(key)
        if cached is None or cached[0] <= now:
            allowed, reason = await self._review(creator, target)
            self._sar[key] = cached = (now + SAR_TTL_SECONDS, allowed, reason)
            if len(self._sar) > 4096:
                self._sar = {k: v for k, v in self._sar.items() if v[0] > now}
        if cached[1]:
            return None
        return f"reference to {target} refused: {creator.username} may not get it ({cached[2]})"

    async def _review(self, creator: Creator, target: Target) -> tuple[bool, str]:
        attributes: dict[str, Any] = {
            "verb": "get",
            "group": target.kind.group,
            "resource": target.kind.plural,
            "name": target.name,
        }
        if target.namespace:
            attributes["namespace"] = target.namespace
        body = {
            "spec": {
                "user": creator.username,
                "groups": list(creator.groups),
                "resourceAttributes": attributes,
            }
        }
        try:
            review = await self._store.create(SUBJECT_ACCESS_REVIEW, None, body)
        except ForbiddenError as exc:
            return False, f"the operator may not create SubjectAccessReviews: {exc}"[:300]
        status = review.status
        reason = str(status.get("reason") or status.get("evaluationError") or "RBAC")
        return status.get("allowed") is True, reason[:300]


# -- what the operator itself may watch --------------------------------------------------------


@final
class WatchPermissions:
    """Whether the operator may list+watch a kind in a namespace, asked once per interval.

    A gate may name an object its creator may read but the operator may not (a Secret, with
    the shipped RBAC). Watching it anyway would fail with 403 and be retried and logged
    forever; instead the operator asks the API server (SelfSubjectAccessReview) once per
    ``interval``, starts no watch while it may not, and logs that once per interval.
    """

    def __init__(self, store: Store, clock: Clock, *, interval: float) -> None:
        self._store = store
        self._clock = clock
        self.interval = interval
        self._answers: dict[tuple[ResourceKind, str], tuple[float, str | None]] = {}
        self.reviews = 0
        self.logged = 0

    async def denied(self, kind: ResourceKind, namespace: str) -> str | None:
        """``None`` if the operator may list and watch ``kind`` in ``namespace``, else why."""
        key = (kind, namespace)
        now = self._clock.monotonic()
        cached = self._answers.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        why: str | None = None
        for verb in ("list", "watch"):
            attributes: dict[str, Any] = {
                "verb": verb,
                "group": kind.group,
                "resource": kind.plural,
            }
            if namespace:
                attributes["namespace"] = namespace
            self.reviews += 1
            try:
                review = await self._store.create(
                    SELF_SUBJECT_ACCESS_REVIEW, None, {"spec": {"resourceAttributes": attributes}}
                )
            except APIError as exc:
                why = f"cannot check its own access: {type(exc).__name__}"
                break
            if review.status.get("allowed") is not True:
                where = f"in namespace {namespace}" if namespace else "cluster-wide"
                why = f"the operator may not {verb} {kind.plural} {where}"
                break
        self._answers[key] = (now + self.interval, why)
        if len(self._answers) > 4096:
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
        if why is not None:
            self.logged += 1
            log.warning(
                "%s; gates referencing them wait (checked again in %gs)", why, self.interval
            )
        return why

"""Gate: wait until a set of conditions across the cluster holds (AND/OR, external hooks).

::

    gate = Gate("release")
    await gate.create([
        Condition.job("validated", "validate"),
        Condition.any("stage", Condition.barrier("stage-1", "stage-1"),
                               Condition.external("approved")),
    ])
    await gate.wait()                        # returns when Open; raises GateFailed
    await Gate("release").mark("approved", message="LGTM")   # someone else, elsewhere

The operator evaluates the referenced objects and writes one status entry per condition;
waiting is the shared watch of Gates (no polling): a waiter wakes on the watch event that
carries the write opening the gate. ``mark`` is a compare-and-swap on the status, so an
external-only gate opens even with the operator down. ``wait`` judges the gate with the
same pure function the operator uses, over the spec as it is now, so a status computed for
an older spec never lets a waiter through. Layout and guarantees: ``docs/gate.md``.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

import attrs

from konductor_sdk._kernel.cas import read, update_status
from konductor_sdk._kernel.cel_eval import check_expression
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.clock import parse_rfc3339, rfc3339
from konductor_sdk._kernel.errors import (
    AlreadyExistsError,
    ConfigurationError,
    ForbiddenError,
    GateFailed,
    NotFoundError,
)
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import GATE, KObject, ResourceKind
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._machines import gate as state
from konductor_sdk._machines.gate_spec import MATCHES, MAX_TIMEOUT_SECONDS, parse_spec

__all__ = ["Condition", "ConditionState", "Gate", "GateStatistics", "GateStatus"]

SELF_SUBJECT_REVIEW: Final = ResourceKind(
    "authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False
)


@final
@attrs.frozen
class Condition:
    """One entry of a gate's condition list; build with the class methods."""

    name: str
    body: Mapping[str, Any]

    def to_spec(self) -> dict[str, Any]:
        """The condition as it appears in ``spec.conditions``."""
        body = {k: (v.to_spec() if isinstance(v, Condition) else v) for k, v in self.body.items()}
        return {"name": self.name, **body}

    @staticmethod
    def _ref(key: str, name: str, obj: str, namespace: str | None, /, **extra: Any) -> Condition:
        ref: dict[str, Any] = {"name": obj, **extra}
        if namespace is not None:
            ref["namespace"] = namespace
        return Condition(name, {key: ref})

    @classmethod
    def job(
        cls, name: str, job: str, *, namespace: str | None = None, state: str = "Complete"
    ) -> Condition:
        """The batch/v1 Job ``job`` reached ``state`` (``Complete`` or ``Failed``)."""
        return cls._ref("job", name, job, namespace, state=state)

    @classmethod
    def barrier(
        cls, name: str, barrier: str, *, namespace: str | None = None, state: str = "Open"
    ) -> Condition:
        """The Barrier is ``Open`` (or ``Failed``)."""
        return cls._ref("barrier", name, barrier, namespace, state=state)

    @classmethod
    def semaphore(
        cls, name: str, semaphore: str, *, namespace: str | None = None, min_available: int = 1
    ) -> Condition:
        """The Semaphore has at least ``min_available`` free permits."""
        return cls._ref("semaphore", name, semaphore, namespace, minAvailable=min_available)

    @classmethod
    def lease(
        cls, name: str, lease: str, *, namespace: str | None = None, state: str = "Held"
    ) -> Condition:
        """The Konductor Lease is ``Held`` (or ``Free``)."""
        return cls._ref("lease", name, lease, namespace, state=state)

    @classmethod
    def gate(cls, name: str, gate: str, *, namespace: str | None = None) -> Condition:
        """Another Gate is Open (it failing makes this condition impossible)."""
        return cls._ref("gate", name, gate, namespace)

    @classmethod
    def once(cls, name: str, once: str, *, namespace: str | None = None) -> Condition:
        """The Once is done."""
        return cls._ref("once", name, once, namespace)

    @classmethod
    def wait_group(cls, name: str, wait_group: str, *, namespace: str | None = None) -> Condition:
        """The WaitGroup's counter is zero."""
        return cls._ref("waitGroup", name, wait_group, namespace)

    @classmethod
    def object(
        cls,
        name: str,
        *,
        api_version: str,
        kind: str,
        object_name: str,
        expression: str,
        namespace: str | None = None,
    ) -> Condition:
        """A CEL ``expression`` over any object (bound to ``object``) is true."""
        return cls._ref(
            "object",
            name,
            object_name,
            namespace,
            apiVersion=api_version,
            kind=kind,
            expression=expression,
        )

    @classmethod
    def external(cls, name: str) -> Condition:
        """Set by someone through the API: :meth:`Gate.mark` / ``koncli gate mark``."""
        return cls(name, {"external": {}})

    @classmethod
    def http(
        cls,
        name: str,
        url: str,
        *,
        expect_status: int = 200,
        json_field: str | None = None,
        json_value: str | None = None,
        interval: int = 10,
        timeout: int = 5,
    ) -> Condition:
        """An HTTP probe the operator runs (only if it was started with probes enabled)."""
        probe: dict[str, Any] = {
            "url": url,
            "expectStatus": expect_status,
            "intervalSeconds": interval,
            "timeoutSeconds": timeout,
        }
        if json_field is not None:
            probe["jsonField"] = json_field
        if json_value is not None:
            probe["jsonValue"] = json_value
        return cls(name, {"http": probe})

    @classmethod
    def all(cls, name: str, *conditions: Condition | Mapping[str, Any]) -> Condition:
        """A nested group that holds when every condition holds."""
        return cls(name, {"group": {"match": "all", "conditions": _specs(conditions)}})

    @classmethod
    def any(cls, name: str, *conditions: Condition | Mapping[str, Any]) -> Condition:
        """A nested group that holds when at least one condition holds."""
        return cls(name, {"group": {"match": "any", "conditions": _specs(conditions)}})


def _specs(conditions: Sequence[Condition | Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [c.to_spec() if isinstance(c, Condition) else dict(c) for c in conditions]


def _time(value: Any) -> dt.datetime | None:
    try:
        return parse_rfc3339(str(value)) if value else None
    except ValueError:
        return None


@final
@attrs.frozen
class ConditionState:
    """One leaf condition as last evaluated (``stale``: for an older version of its spec)."""

    name: str
    type: str
    met: bool
    failed: bool
    message: str
    last_transition_time: dt.datetime | None
    observed_generation: int
    marked_by: Mapping[str, str]
    stale: bool


@final
@attrs.frozen
class GateStatus:
    """A gate as judged from its current spec and status (see ``docs/gate.md``)."""

    name: str
    namespace: str
    phase: str
    met: int
    total: int
    message: str
    reason: str | None
    conditions: tuple[ConditionState, ...]
    opened_at: dt.datetime | None
    open_count: int
    generation: int
    observed_generation: int

    @property
    def open(self) -> bool:
        return self.phase == state.OPEN

    @property
    def failed(self) -> bool:
        return self.phase == state.FAILED

    @property
    def unmet(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions if not c.met or c.stale)

    @classmethod
    def from_object(cls, obj: KObject) -> GateStatus:
        """Judge ``obj`` with :func:`~konductor_sdk._machines.gate.judge` (pure)."""
        s = state.judge(obj)
        try:
            prints = {leaf.name: leaf.fingerprint for leaf in parse_spec(obj.spec).leaves}
        except ConfigurationError:
            prints = {}
        conditions = tuple(
            ConditionState(
                name=str(e.get("name", "")),
                type=str(e.get("type", "")),
                met=e.get("met") is True,
                failed=e.get("failed") is True,
                message=str(e.get("message", "")),
                last_transition_time=_time(e.get("lastTransitionTime")),
                observed_generation=int(e.get("observedGeneration", 0)),
                marked_by=dict(e.get("markedBy") or {}),
                stale=prints.get(str(e.get("name"))) != e.get("fingerprint"),
            )
            for e in s.get("conditions") or ()
        )
        met, _, total = str(s.get("met", "0/0")).partition("/")
        return cls(
            name=obj.name,
            namespace=obj.namespace,
            phase=str(s["phase"]),
            met=int(met or 0),
            total=int(total or 0),
            message=str(s.get("message", "")),
            reason=(s.get("failure") or {}).get("reason"),
            conditions=conditions,
            opened_at=_time(s.get("openedAt")),
            open_count=int(s.get("openCount", 0)),
            generation=obj.generation,
            observed_generation=int(s.get("observedGeneration", 0)),
        )


@final
@attrs.frozen
class GateStatistics:
    """Counters of one :class:`Gate` handle, for humans and tests."""

    waiting: int
    waits: int
    wakeups: int
    opened: int
    failed: int
    marks: int


_WHOAMI: weakref.WeakKeyDictionary[Client, dict[str, Any] | None] = weakref.WeakKeyDictionary()


async def whoami(client: Client) -> dict[str, Any] | None:
    """``{username, groups}`` as the API server authenticates ``client`` (SelfSubjectReview);
    ``None`` if the server does not say. Cached per client."""
    if client in _WHOAMI:
        return _WHOAMI[client]
    await client.connect()
    info: dict[str, Any] | None = None
    try:
        review = await client.store.create(SELF_SUBJECT_REVIEW, None, {"metadata": {}})
    except (ForbiddenError, NotFoundError):
        pass
    else:
        user = review.status.get("userInfo") or {}
        if user.get("username"):
            info = {
                "username": str(user["username"]),
                "groups": [str(g) for g in user.get("groups") or ()],
            }
    _WHOAMI[client] = info
    return info


@final
class Gate:
    """A handle on the Gate ``name``; cheap, holds no server-side state.

    Args:
        name: the Gate object's name.
        namespace: default: the client's namespace.
        client: default: :func:`~konductor_sdk.default_client`.

    Raises:
        ConfigurationError: ``name`` is not a valid object name.
    """

    def __init__(
        self, name: str, *, namespace: str | None = None, client: Client | None = None
    ) -> None:
        self.name = check_object_name(name)
        if namespace is not None:
            check_object_name(namespace, field="namespace")
        self._namespace = namespace
        self._client = client
        self._waiting = self._waits = self._wakeups = 0
        self._opened = self._failed = self._marks = 0

    def __repr__(self) -> str:
        ns = self._namespace
        if ns is None and self._client is not None and self._client_ready():
            ns = self._client.namespace
        return f"<Gate {ns or '?'}/{self.name}>"

    def _client_ready(self) -> bool:
        try:
            return self._client is not None and bool(self._client.namespace)
        except RuntimeError:
            return False

    async def _connected(self) -> tuple[Client, str]:
        if self._client is None:
            self._client = default_client()
        await self._client.connect()
        return self._client, self._namespace or self._client.namespace

    def statistics(self) -> GateStatistics:
        return GateStatistics(
            waiting=self._waiting,
            waits=self._waits,
            wakeups=self._wakeups,
            opened=self._opened,
            failed=self._failed,
            marks=self._marks,
        )

    async def create(
        self,
        conditions: Sequence[Condition | Mapping[str, Any]],
        *,
        match: str = "all",
        timeout: int | None = None,  # noqa: ASYNC109 - spec.timeoutSeconds (data), not a wait
        latch: bool = False,
        exist_ok: bool = False,
    ) -> GateStatus:
        """Create the gate; the authenticated user is recorded as ``spec.creator``.

        Args:
            conditions: :class:`Condition` objects (or their spec dicts).
            match: ``all`` or ``any`` over the top-level conditions.
            timeout: whole seconds the gate may wait before it fails (``None``: forever).
            latch: once Open, stay Open (else the gate follows its conditions).
            exist_ok: return an existing gate of that name (its spec unchanged) instead
                of raising.

        Raises:
            ConfigurationError: a condition, ``match``, ``timeout`` or ``latch`` is out of
                range (the message names the field); nothing is written.
            AlreadyExistsError: the gate exists and ``exist_ok`` is false.
        """
        if match not in MATCHES:
            raise ConfigurationError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
        spec: dict[str, Any] = {"match": match, "conditions": _specs(conditions), "latch": latch}
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int):
                raise ConfigurationError(f"timeout must be whole seconds (int), got {timeout!r}")
            if not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
                raise ConfigurationError(
                    f"timeout must be in 1..{MAX_TIMEOUT_SECONDS} seconds, got {timeout}"
                )
            spec["timeoutSeconds"] = timeout
        gs = parse_spec(spec)
        for leaf in gs.leaves:
            if leaf.type == "object":
                try:
                    check_expression(str(leaf.params["expression"]))
                except ConfigurationError as exc:
                    raise ConfigurationError(f"{leaf.path}.object.{exc}") from None
        client, ns = await self._connected()
        creator = await whoami(client)
        if creator is not None:
            spec["creator"] = creator
        with span("gate.create", namespace=ns, gate=self.name):
            try:
                obj = await client.store.create(
                    GATE, ns, {"metadata": {"name": self.name, "namespace": ns}, "spec": spec}
                )
            except AlreadyExistsError:
                if not exist_ok:
                    raise
                obj = await client.store.get(GATE, ns, self.name)
        return GateStatus.from_object(obj)

    async def status(self) -> GateStatus:
        """The gate as it is now (a fresh read).

        Raises:
            NotFoundError: no such gate.
        """
        client, ns = await self._connected()
        return GateStatus.from_object(await read(client, GATE, ns, self.name, fresh=True))

    async def wait(self) -> GateStatus:
        """Wait until the gate is Open; returns its status at that moment.

        Driven by the shared watch: no polling, and the waiter wakes on the watch event of
        the write that opens the gate. A gate without ``latch`` may close again after this
        returns. Cancel with ``anyio.fail_after``/``move_on_after``.

        Raises:
            GateFailed: the gate failed (timeout, a condition that can never hold, an
                invalid spec); the message says why and names the unmet conditions.
            NotFoundError: the gate does not exist, or was deleted while waiting.
        """
        client, ns = await self._connected()
        watch = await client.watch(GATE, ns)
        self._waits += 1
        self._waiting += 1
        try:
            with span("gate.wait", namespace=ns, gate=self.name):
                checked = False
                while True:
                    changed = watch.next_change(self.name, ns)
                    obj = watch.get(self.name, ns)
                    if obj is None and not checked:
                        # Created by us a moment ago, its watch event may still be on its way.
                        obj = await client.store.get(GATE, ns, self.name)
                        watch.observe(obj)
                        continue
                    if obj is None:
                        raise NotFoundError(f"Gate {ns}/{self.name} not found", status=404)
                    checked = True
                    st = GateStatus.from_object(obj)
                    if st.open:
                        self._opened += 1
                        return st
                    if st.failed:
                        self._failed += 1
                        raise GateFailed(
                            f"Gate {ns}/{self.name} failed ({st.reason}): {st.message}"
                        )
                    await changed.wait()
                    self._wakeups += 1
        finally:
            self._waiting -= 1

    async def mark(self, condition: str, *, met: bool = True, message: str = "") -> GateStatus:
        """Set the external condition ``condition`` of this gate.

        Records who marked it (``markedBy``: this client's holder id and, if the server
        tells, its authenticated user name — self-reported, see ``docs/gate.md``).

        Raises:
            ConfigurationError: ``condition`` is not an external condition of the gate, or
                ``message`` is longer than 1024 characters; nothing is written.
            NotFoundError: no such gate.
        """
        if not isinstance(met, bool):
            raise ConfigurationError(f"met must be a bool, got {met!r}")
        if not isinstance(message, str) or len(message) > state.MAX_MESSAGE:
            raise ConfigurationError(
                f"message must be a string of at most {state.MAX_MESSAGE} characters"
            )
        client, ns = await self._connected()
        user = await whoami(client)
        by = {"holder": client.identity.holder}
        if user is not None:
            by["username"] = str(user["username"])
        now = rfc3339(client.clock.now())

        def mutate(obj: KObject) -> dict[str, Any] | None:
            return state.mark_write(obj, condition, met=met, message=message, marked_by=by, now=now)

        with span("gate.mark", namespace=ns, gate=self.name, condition=condition, met=met):
            result = await update_status(client, GATE, ns, self.name, mutate)
        self._marks += 1
        return GateStatus.from_object(result.object)

    async def delete(self) -> None:
        """Delete the gate (waiters get :class:`NotFoundError`).

        Raises:
            NotFoundError: no such gate.
        """
        client, ns = await self._connected()
        await client.store.delete(GATE, ns, self.name)

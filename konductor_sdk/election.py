"""Leader election shaped like client-go's ``tools/leaderelection``.

::

    config = ElectionConfig("scheduler", lease_duration=15, renew_deadline=10, retry_period=2)

    async def lead(token: int) -> None:
        await serve(fencing_token=token)      # cancelled when leadership is lost

    elector = LeaderElector(config, on_started_leading=lead, on_stopped_leading=flush)
    await elector.run()                       # campaigns, leads, campaigns again...

Two backends share one state machine: ``"konductor"`` (our ``sync.konductor.io`` Lease, with
fencing tokens, priority handoff and every candidate a ``Claim`` visible in ``kubectl get``) and
``"coordination"`` (the built-in ``coordination.k8s.io/v1`` Lease with client-go's record
semantics, so Python and Go replicas can share one election). Guarantees: ``docs/lease.md``.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import Any, Literal, Protocol, final

import anyio
import attrs

from konductor_sdk._engines.coordination import CoordinationCandidate
from konductor_sdk._engines.lease_campaign import LeaseRequest, acquire_lease
from konductor_sdk._engines.lease_held import LeaseCounters
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.errors import APIError, ConfigurationError, ConflictExhausted
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import LEASE, KObject, ResourceKind
from konductor_sdk._kernel.validate import check_priority, check_ttl
from konductor_sdk._machines import lease as lease_state
from konductor_sdk.fencing import FencingToken

log = logging.getLogger("konductor_sdk.election")

__all__ = ["ElectionConfig", "ElectorStatistics", "LeaderElector"]

Backend = Literal["konductor", "coordination"]
_BACKENDS = ("konductor", "coordination")
_IDENTITY_MAX = 512
# client-go's JitterFactor: retries are spread by up to 20%, so the renew deadline must
# leave room for more than one retry period.
JITTER_FACTOR = 1.2


def _positive_seconds(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{field} must be a finite number of seconds, got {value!r}")
    if value <= 0:
        raise ConfigurationError(f"{field} must be > 0, got {value}")
    return float(value)


@final
@attrs.frozen
class ElectionConfig:
    """What to elect on and how fast; validated on construction (client-go's rules).

    Args:
        name: the lease's name.
        identity: this candidate's identity (client-go's ``Identity``); default: the
            client's holder id, unique per process.
        namespace: default: the client's.
        lease_duration: whole seconds a standby waits, after it last saw the record change,
            before it takes over an unreleased lease.
        renew_deadline: the leader gives up if it could not renew for this long (counted
            from when it sent its last successful renewal).
        retry_period: how often the leader renews, and the longest a standby goes without
            re-judging expiry (it also wakes on every change it watches).
        priority: ``"konductor"`` backend only, in ``[-1000000, 1000000]``: candidates are
            served by priority, and a waiting candidate with a higher priority than the
            leader's asks it to hand over.
        release_on_cancel: release the lease when :meth:`LeaderElector.run` is cancelled,
            so a standby takes over at once instead of after ``lease_duration``.
        backend: ``"konductor"`` or ``"coordination"``.

    Raises:
        ConfigurationError: unless ``lease_duration > renew_deadline > 1.2 * retry_period
            > 0``, or another field is out of range; the message names the field.
    """

    name: str
    identity: str | None = attrs.field(default=None, kw_only=True)
    namespace: str | None = attrs.field(default=None, kw_only=True)
    lease_duration: int = attrs.field(default=15, kw_only=True)
    renew_deadline: float = attrs.field(default=10.0, kw_only=True)
    retry_period: float = attrs.field(default=2.0, kw_only=True)
    priority: int = attrs.field(default=0, kw_only=True)
    release_on_cancel: bool = attrs.field(default=True, kw_only=True)
    backend: Backend = attrs.field(default="konductor", kw_only=True)

    def __attrs_post_init__(self) -> None:
        check_object_name(self.name, field="name")
        if self.identity is not None and (
            not isinstance(self.identity, str)
            or not self.identity.strip()
            or len(self.identity) > _IDENTITY_MAX
        ):
            raise ConfigurationError(
                f"identity must be a non-empty string of at most {_IDENTITY_MAX} characters, "
                f"got {self.identity!r}"
            )
        if self.namespace is not None:
            check_object_name(self.namespace, field="namespace")
        object.__setattr__(self, "lease_duration", check_ttl(self.lease_duration, "lease_duration"))
        retry = _positive_seconds(self.retry_period, "retry_period")
        renew = _positive_seconds(self.renew_deadline, "renew_deadline")
        if renew <= JITTER_FACTOR * retry:
            raise ConfigurationError(
                f"renew_deadline must be > {JITTER_FACTOR} * retry_period "
                f"({JITTER_FACTOR * retry:g}), got {renew:g}"
            )
        if self.lease_duration <= renew:
            raise ConfigurationError(
                f"lease_duration must be > renew_deadline ({renew:g}), got {self.lease_duration}"
            )
        object.__setattr__(self, "priority", check_priority(self.priority))
        if self.backend not in _BACKENDS:
            raise ConfigurationError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.backend == "coordination" and self.priority != 0:
            raise ConfigurationError(
                f"priority must be 0 with backend 'coordination' (client-go records have no "
                f"priority), got {self.priority}"
            )
        if not isinstance(self.release_on_cancel, bool):
            raise ConfigurationError(
                f"release_on_cancel must be a bool, got {self.release_on_cancel!r}"
            )


class _Term(Protocol):
    token: int

    @property
    def fencing(self) -> FencingToken: ...

    @property
    def lost(self) -> bool: ...

    @property
    def lost_reason(self) -> str | None: ...

    async def _keep(self, on_lost: Callable[[str], None]) -> None: ...

    async def release(self) -> None: ...


@final
@attrs.frozen
class ElectorStatistics:
    """A snapshot of a :class:`LeaderElector` (for humans and tests).

    Attributes:
        terms: terms started (``on_started_leading`` calls) by :meth:`LeaderElector.run`.
        evaluations: times a campaign looked at the record to decide.
    """

    is_leader: bool
    leader: str | None
    token: int | None
    terms: int
    evaluations: int


async def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is None:
        return
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


@final
class LeaderElector:
    """Campaigns for leadership and runs ``on_started_leading`` while leading.

    Args:
        config: see :class:`ElectionConfig`.
        client: default: :func:`~konductor_sdk.default_client`.
        on_started_leading: ``fn(token)``, sync or async, called when a term starts. An
            async one runs as the term's body and is **cancelled** when leadership is lost;
            if it returns, leadership is kept (and renewed) until :meth:`run` is cancelled;
            if it raises, the lease is released, ``on_stopped_leading`` runs and
            :meth:`run` re-raises. A sync one must not block.
        on_stopped_leading: ``fn()``: called after every term (lost, yielded, cancelled or
            failed), after the body has stopped and before the lease is released; and
            once when :meth:`run` ends without ever having led (client-go's defer).
        on_new_leader: ``fn(identity)``: called when the observed leader changes
            (ourselves included).
    """

    def __init__(
        self,
        config: ElectionConfig,
        *,
        client: Client | None = None,
        on_started_leading: Callable[[int], Any] | None = None,
        on_stopped_leading: Callable[[], Any] | None = None,
        on_new_leader: Callable[[str], Any] | None = None,
    ) -> None:
        if not isinstance(config, ElectionConfig):
            raise ConfigurationError(f"config must be an ElectionConfig, got {config!r}")
        self.config = config
        self._client = client
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._running = False
        self._term: _Term | None = None
        self._leader: str | None = None
        self._reported: str | None = None
        self._terms = 0
        self._campaign: LeaseRequest | CoordinationCandidate | None = None
        self._counters = LeaseCounters()

    def __repr__(self) -> str:
        c = self.config
        ns = c.namespace or (self._client._namespace if self._client is not None else None)
        role = "leader" if self.is_leader else "standby" if self._running else "idle"
        return f"<LeaderElector {ns or '?'}/{c.name} backend={c.backend} {role}>"

    @property
    def is_leader(self) -> bool:
        """True while a term is running and its lease is not lost. Read from the clock on
        access: false the instant the term's deadline passes (a leader frozen past its
        lease sees ``False`` on its first look after it resumes), not when a background
        task notices."""
        return self._term is not None and not self._term.lost

    @property
    def leader(self) -> str | None:
        """The leader's identity as last observed, or ``None`` if nobody leads."""
        return self._leader

    @property
    def token(self) -> int | None:
        """The fencing token of the current term, or ``None`` when not leading."""
        return self._term.token if self.is_leader and self._term is not None else None

    @property
    def fencing(self) -> FencingToken | None:
        """The current term's token for :class:`konductor_sdk.Fence`, or ``None`` when not
        leading."""
        return self._term.fencing if self.is_leader and self._term is not None else None

    def statistics(self) -> ElectorStatistics:
        """A snapshot of this elector (no I/O)."""
        campaign = self._campaign
        if isinstance(campaign, CoordinationCandidate):
            evaluations = campaign.evaluations
        else:
            evaluations = self._counters.evaluations
        return ElectorStatistics(
            is_leader=self.is_leader,
            leader=self._leader,
            token=self.token,
            terms=self._terms,
            evaluations=evaluations,
        )

    async def run(self) -> None:
        """Campaign and lead until cancelled (or until ``on_started_leading`` raises).

        Raises:
            RuntimeError: this elector is already running.
        """
        if self._running:
            raise RuntimeError(f"{self!r} is already running")
        self._running = True
        terms_before = self._terms
        try:
            client = self._client if self._client is not None else default_client()
            await client.connect()
            identity = self.config.identity or client.identity.holder
            namespace = self.config.namespace or client.namespace
            error: Exception | None = None
            async with anyio.create_task_group() as tg:
                kind = self._start_campaign(client, namespace, identity)
                tg.start_soon(self._follow_leader, client, kind, namespace)
                try:
                    await self._campaign_forever(client)
                except Exception as exc:
                    error = exc  # re-raised below, not as an ExceptionGroup
                tg.cancel_scope.cancel()
            if error is not None:
                raise error
        finally:
            self._running = False
            if self._terms == terms_before:
                with anyio.CancelScope(shield=True):
                    await _call(self._on_stopped_leading)

    def _start_campaign(self, client: Client, namespace: str, identity: str) -> ResourceKind:
        c = self.config
        if c.backend == "coordination":
            self._campaign = CoordinationCandidate(
                client,
                namespace,
                c.name,
                identity=identity,
                duration=c.lease_duration,
                poll=c.retry_period,
                renew_every=c.retry_period,
                renew_deadline=c.renew_deadline,
            )
            return self._campaign.kind
        self._campaign = LeaseRequest(
            name=c.name,
            namespace=namespace,
            ttl=c.lease_duration,
            priority=c.priority,
            holder=identity,
            pod=client.identity.pod,
            poll=c.retry_period,
            renew_every=c.retry_period,
            renew_deadline=c.renew_deadline,
        )
        return LEASE

    async def _acquire(self, client: Client) -> _Term:
        campaign = self._campaign
        if isinstance(campaign, LeaseRequest):
            return await acquire_lease(client, campaign, self._counters, blocking=True)
        assert campaign is not None
        return await campaign.acquire()

    async def _campaign_forever(self, client: Client) -> None:
        c = self.config
        while True:
            try:
                term = await self._acquire(client)
            except (APIError, ConflictExhausted) as exc:
                # The server failed us (waiting for our turn never does): client-go retries
                # every retry_period; so do we.
                log.warning("%r: campaign failed, retrying: %s", self, exc)
                await anyio.sleep(c.retry_period)
                continue
            await self._lead(term)

    async def _lead(self, term: _Term) -> None:
        self._term = term
        self._terms += 1
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(term._keep, lambda reason: tg.cancel_scope.cancel())
                try:
                    await _call(self._on_started_leading, term.token)
                    await anyio.sleep_forever()
                except Exception as exc:
                    error = exc
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self._term = None
                try:
                    await _call(self._on_stopped_leading)
                finally:
                    outer_cancel = error is None and not term.lost
                    if not outer_cancel or self.config.release_on_cancel:
                        try:
                            await term.release()
                        except APIError as exc:
                            log.warning("%r: release failed: %s", self, exc)
        if error is not None:
            raise error
        if term.lost:
            log.info("%r: term %d ended: %s", self, term.token, term.lost_reason)

    async def _follow_leader(self, client: Client, kind: ResourceKind, namespace: str) -> None:
        while True:
            try:
                await self._report_leaders(client, kind, namespace)
            except APIError as exc:
                # The shared watch failed (forbidden, or the server unreachable past the
                # client's retry budget); an elector runs for good: look again later.
                log.warning("%r: cannot watch the lease, retrying: %s", self, exc)
                await anyio.sleep(self.config.retry_period)

    async def _report_leaders(self, client: Client, kind: ResourceKind, namespace: str) -> None:
        watch = await client.watch(kind, namespace)
        name = self.config.name
        while True:
            changed = watch.next_change(name, namespace)
            self._leader = _leader_of(kind, watch.get(name, namespace))
            if self._leader is not None and self._leader != self._reported:
                self._reported = self._leader
                await _call(self._on_new_leader, self._leader)
            await changed.wait()


def _leader_of(kind: ResourceKind, obj: KObject | None) -> str | None:
    if obj is None:
        return None
    if kind == LEASE:
        current = lease_state.holder_entry(obj.status)
        return str(current[1].get("holder") or "") or None if current else None
    return str(obj.spec.get("holderIdentity") or "") or None

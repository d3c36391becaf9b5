"""The operator process: connect, serve probes and metrics, elect, run controllers.

Replicas elect one active instance with Konductor's own :mod:`konductor_sdk.election`
(dogfood): the term body (``on_started_leading``) runs every controller in one task group,
and the elector cancels it the moment the lease is lost (renew deadline passed, or the
lease found taken); on shutdown the lease is released so a standby takes over at once.
Every write a controller makes is a CAS, so even two replicas that briefly both believe
they lead cannot corrupt an object: the loser's write is rejected and re-judged on fresh
state.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Final, final

import anyio
import attrs
from anyio.abc import TaskStatus

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import SYSTEM_CLOCK, Clock
from konductor_sdk._kernel.errors import APIError
from konductor_sdk._kernel.objects import LEASE
from konductor_sdk.election import LeaderElector

from . import _core
from ._config import OperatorConfig
from ._context import Controller, Health, OperatorContext
from ._events import EventRecorder
from ._http import serve
from ._metrics import Metrics
from ._metrics_auth import MetricsAuthorizer

log = logging.getLogger("konductor_operator")

GATE_CONTROLLER: Final = "konductor_operator.gate_controller"
_RESTART_MIN: Final = 1.0
_RESTART_MAX: Final = 60.0


def default_controllers() -> list[tuple[str, Controller]]:
    """The core controller, plus the Gate controller when its module is installed."""
    controllers: list[tuple[str, Controller]] = [("core", _core.run)]
    try:
        gate = importlib.import_module(GATE_CONTROLLER)
    except ModuleNotFoundError as exc:
        if exc.name != GATE_CONTROLLER:
            log.exception("the gate controller cannot be imported; running without it")
    except Exception:
        # A broken plug-in must not take reaping down with it; say so loudly.
        log.exception("the gate controller cannot be imported; running without it")
    else:
        controllers.append(("gate", gate.run))
    return controllers


@final
@attrs.frozen
class OperatorStatistics:
    """A snapshot of an :class:`Operator`."""

    leading: bool
    terms: int
    controller_restarts: int
    leader: str | None


@final
class Operator:
    """One operator replica.

    Args:
        config: the parsed flags.
        client: a client to use (tests); default: one built from ``config.kubeconfig``
            and closed on exit.
        controllers: ``(name, controller)`` pairs; default: :func:`default_controllers`.
        clock: time source for expiry judgments.
    """

    def __init__(
        self,
        config: OperatorConfig,
        *,
        client: Client | None = None,
        controllers: Sequence[tuple[str, Controller]] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self._own_client = client is None
        self.client = client if client is not None else Client(kubeconfig=config.kubeconfig)
        self._controllers = list(controllers) if controllers is not None else None
        self.clock = clock
        self.metrics = Metrics()
        self.health = Health()
        self._leading = False
        self._terms = 0
        self._restarts = 0
        self._leader: str | None = None
        self.ctx: OperatorContext | None = None

    def __repr__(self) -> str:
        state = "leading" if self._leading else "standby"
        return f"<Operator {self.config.lease_name} {state} terms={self._terms}>"

    def statistics(self) -> OperatorStatistics:
        return OperatorStatistics(self._leading, self._terms, self._restarts, self._leader)

    @property
    def identity(self) -> str:
        return self.config.identity or self.client.identity.holder

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``task_status.started(metrics port or 0)`` once serving."""
        try:
            await self.client.connect()
            ctx = self.ctx = OperatorContext(
                client=self.client,
                namespaces=self.config.namespaces,
                events=EventRecorder(
                    self.client,
                    clock=self.clock,
                    instance=self.identity,
                    global_rate=self.config.event_rate,
                    global_burst=self.config.event_burst,
                    on_result=lambda result: self.metrics.events.labels(result).inc(),
                ),
                metrics=self.metrics,
                clock=self.clock,
                config=self.config,
                logger=log,
                health=self.health,
            )
            controllers = self._controllers
            if controllers is None:
                controllers = default_controllers()
            async with anyio.create_task_group() as tg:
                port = 0
                if self.config.metrics_port:
                    authorizer = None
                    if self.config.metrics_auth == "kubernetes":
                        authorizer = MetricsAuthorizer(self.client.store, self.clock)
                    elif self.config.metrics_host not in ("127.0.0.1", "::1", "localhost"):
                        log.warning(
                            "/metrics is served on %s without authentication "
                            "(--metrics-auth=kubernetes protects it)",
                            self.config.metrics_host,
                        )
                    tls = None
                    if self.config.metrics_tls_cert and self.config.metrics_tls_key:
                        tls = (self.config.metrics_tls_cert, self.config.metrics_tls_key)
                    port = await tg.start(
                        lambda task_status: serve(
                            self.metrics,
                            self.health,
                            host=self.config.metrics_host,
                            port=self.config.metrics_port,
                            authorizer=authorizer,
                            tls=tls,
                            task_status=task_status,
                        )
                    )
                self.health.connected = True
                tg.start_soon(ctx.events.run)
                if self.config.leader_elect:
                    tg.start_soon(self._elect, ctx, controllers)
                else:
                    tg.start_soon(self._term, ctx, controllers, 0)
                log.info(
                    "operator started",
                    extra={
                        "identity": self.identity,
                        "namespaces": list(self.config.namespaces or ["*"]),
                        "controllers": [name for name, _ in controllers],
                        "metrics_port": port,
                    },
                )
                task_status.started(port)
        finally:
            self.metrics.leader.set(0)
            if self._own_client:
                with anyio.CancelScope(shield=True):
                    await self.client.aclose()

    # -- leadership ---------------------------------------------------------------------------

    async def _term(
        self, ctx: OperatorContext, controllers: Sequence[tuple[str, Controller]], token: int
    ) -> None:
        """One term as the active replica: the controllers, until cancelled.

        With election this is the elector's ``on_started_leading`` body, which it cancels
        the moment the lease is lost (its renew deadline passed or a renewal found the
        lease taken), before anyone else can have been granted it.
        """
        self._terms += 1
        self._leading = True
        self.metrics.leader.set(1)
        self.health.leading = True
        log.info("leading: starting controllers", extra={"term": self._terms, "token": token})
        if self.config.leader_elect:
            self._announce_leadership(ctx, token)
        try:
            async with anyio.create_task_group() as tg:
                for name, controller in controllers:
                    tg.start_soon(self._supervise, ctx.with_logger(name), name, controller)
            await anyio.sleep_forever()  # every controller returned: keep leading, idle
        finally:
            self._leading = False
            self.metrics.leader.set(0)
            self.health.leading = False
            log.info("not leading: controllers stopped", extra={"term": self._terms})

    def _new_leader(self, identity: str) -> None:
        self._leader = identity
        log.info("leader is %s", identity, extra={"leader": identity})

    async def _supervise(self, ctx: OperatorContext, name: str, controller: Controller) -> None:
        delay = _RESTART_MIN
        while True:
            started = anyio.current_time()
            try:
                await controller(ctx)
                return
            except Exception:
                ctx.logger.exception("controller %s failed; restarting in %gs", name, delay)
            self._restarts += 1
            self.metrics.controller_restarts.labels(name).inc()
            await anyio.sleep(delay)
            # A controller that ran fine for a while starts again from the short delay.
            ran = anyio.current_time() - started
            delay = _RESTART_MIN if ran > 10 * _RESTART_MAX else min(delay * 2, _RESTART_MAX)

    def _announce_leadership(self, ctx: OperatorContext, token: int) -> None:
        namespace = self.config.lease_namespace or self.client.namespace

        async def announce() -> None:
            try:
                lease = await self.client.store.get(LEASE, namespace, self.config.lease_name)
            except APIError as exc:
                log.debug("cannot read the election lease: %s", exc)
                return
            ctx.events.emit(
                lease, "LeaderElected", f"{self.identity} is the active operator (token {token})"
            )

        self.client.spawn(announce)

    async def _elect(
        self, ctx: OperatorContext, controllers: Sequence[tuple[str, Controller]]
    ) -> None:
        elector = LeaderElector(
            self.config.election_config(
                identity=self.identity,
                namespace=self.config.lease_namespace or self.client.namespace,
            ),
            client=self.client,
            on_started_leading=lambda token: self._term(ctx, controllers, token),
            on_new_leader=self._new_leader,
        )
        await elector.run()

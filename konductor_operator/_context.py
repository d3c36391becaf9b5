"""The plug-in contract: what every controller gets, and the shape of a controller.

A controller is ``async def controller(ctx: OperatorContext) -> None``. The operator runs
all controllers in one task group while this replica is the active one, and cancels them
at once when it stops being so. A controller that raises is logged and restarted with
backoff; one that returns is not restarted. See ``docs/operator.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import final

import attrs

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import Clock

from ._config import OperatorConfig
from ._events import EventRecorder
from ._metrics import Metrics


@final
class Health:
    """What ``/healthz`` and ``/readyz`` answer.

    Components (``core``, ``gate``...) mark themselves ready once their caches are synced
    and not ready when they stop; ``/readyz`` is 200 when the operator is connected and
    every component that registered is ready.
    """

    def __init__(self) -> None:
        self._components: dict[str, bool] = {}
        self.connected = False
        self.leading = False

    def __repr__(self) -> str:
        return f"<Health connected={self.connected} leading={self.leading} {self._components}>"

    def set_ready(self, component: str, ready: bool) -> None:
        self._components[component] = ready

    def remove(self, component: str) -> None:
        self._components.pop(component, None)

    def ready(self) -> bool:
        return self.connected and all(self._components.values())

    def not_ready(self) -> list[str]:
        return sorted(name for name, ok in self._components.items() if not ok)


@final
@attrs.frozen
class OperatorContext:
    """Everything a controller may use.

    Attributes:
        client: the operator's connected :class:`~konductor_sdk.Client` (shared watches,
            store, CAS helpers take it).
        namespaces: the namespaces in scope; ``None`` for all.
        events: rate-limited Kubernetes Events (:meth:`EventRecorder.emit`).
        metrics: the operator's Prometheus metrics (its own registry).
        clock: the operator's clock; judge every expiry with ``clock.monotonic()``.
        config: the parsed flags.
        logger: a logger for the controller (structured: pass ``extra={...}``).
        health: readiness reporting for ``/readyz``.
    """

    client: Client
    namespaces: tuple[str, ...] | None
    events: EventRecorder
    metrics: Metrics
    clock: Clock
    config: OperatorConfig
    logger: logging.Logger
    health: Health = attrs.Factory(Health)

    @classmethod
    def standalone(
        cls,
        client: Client,
        namespaces: tuple[str, ...] | None,
        *,
        config: OperatorConfig | None = None,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ) -> OperatorContext:
        """A context for controllers run without :class:`~konductor_operator.Operator`
        (embedded in another program, tests, benchmarks): events and metrics of its own,
        the client's clock, no leader election, and marked connected, as
        ``Operator.run`` marks it once the client is up."""
        clock = clock or client.clock
        ctx = cls(
            client=client,
            namespaces=namespaces,
            events=EventRecorder(client, clock=clock),
            metrics=Metrics(),
            clock=clock,
            config=config or OperatorConfig(metrics_port=0, leader_elect=False, workers=2),
            logger=logger or logging.getLogger("konductor_operator"),
        )
        ctx.health.connected = True
        return ctx

    def with_logger(self, name: str) -> OperatorContext:
        """This context with the child logger ``name`` (e.g. per controller)."""
        return attrs.evolve(self, logger=self.logger.getChild(name))


Controller = Callable[[OperatorContext], Awaitable[None]]

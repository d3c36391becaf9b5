"""The Konductor operator: reaping, timeouts, status aggregation, Events, metrics, HA.

Clients arbitrate; the operator only repairs and reports, so the primitives stay safe while
it is down. It is generic over kinds: each primitive registers a
:class:`konductor_sdk._machines.rules.KindRules`, and further controllers plug in as
``async def controller(ctx: OperatorContext) -> None`` (see ``docs/operator.md``).
"""

from ._config import OperatorConfig as OperatorConfig
from ._context import Controller as Controller
from ._context import Health as Health
from ._context import OperatorContext as OperatorContext
from ._core import CoreController as CoreController
from ._core import CoreStatistics as CoreStatistics
from ._events import EventRecorder as EventRecorder
from ._events import EventStatistics as EventStatistics
from ._metrics import Metrics as Metrics
from ._operator import Operator as Operator
from ._operator import OperatorStatistics as OperatorStatistics
from ._operator import default_controllers as default_controllers

__all__ = [
    "Controller",
    "CoreController",
    "CoreStatistics",
    "EventRecorder",
    "EventStatistics",
    "Health",
    "Metrics",
    "Operator",
    "OperatorConfig",
    "OperatorContext",
    "OperatorStatistics",
    "default_controllers",
]

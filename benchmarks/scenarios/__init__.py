"""Scenario registry: one module per scenario, run in this order.

``B*`` are baselines on native objects (no CRD needed); the numbered ones are the issue's
scenarios, each of which also measures its own baseline on its own object in every repeat.
"""

from __future__ import annotations

import importlib

from .._harness import Scenario

MODULES = (
    "startup",
    "raw_patch",
    "raw_watch",
    "raw_write",
    "uncontended",
    "policy_cost",
    "contention",
    "barrier",
    "barrier_scale",
    "failover",
    "lease_candidates",
    "wakeup",
    "many_waiters",
    "queue_scale",
    "holders_scale",
    "objects_scale",
    "busy_neighbours",
    "operator_scale",
)


def load() -> dict[str, Scenario]:
    """Every scenario by name, in run order (a module that is missing is skipped)."""
    scenarios: dict[str, Scenario] = {}
    for module_name in MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module_name}":
                raise
            continue
        scenario: Scenario = module.SCENARIO
        scenarios[scenario.name] = scenario
    return scenarios

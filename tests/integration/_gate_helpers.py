"""Shared helpers for the Gate integration tests: an in-process gate controller, raw objects."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from konductor_operator._config import OperatorConfig
from konductor_operator._context import OperatorContext
from konductor_operator.gate_controller import GateController
from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import GATE, KObject, ResourceKind
from konductor_sdk._machines import gate as state


@asynccontextmanager
async def gate_controller(
    kubeconfig: Path,
    namespace: str,
    *,
    probes: bool = False,
    allow: tuple[str, ...] = (),
) -> AsyncIterator[GateController]:
    """Run the gate controller in this process (its own client: another "process")."""
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("gate-operator")
    ) as client:
        config = OperatorConfig(
            namespaces=(namespace,),
            metrics_port=0,
            leader_elect=False,
            workers=2,
            enable_http_probes=probes,
            http_probe_allow=allow,
        )
        ctx = OperatorContext.standalone(
            client, (namespace,), config=config, logger=logging.getLogger("tests.gate")
        )
        controller = GateController(ctx)
        async with anyio.create_task_group() as tg:
            tg.start_soon(controller.run)
            while not ctx.health.ready():
                ctx.health.connected = True
                await anyio.sleep(0.01)
            yield controller
            tg.cancel_scope.cancel()


async def until(
    client: Client, name: str, predicate: Callable[[KObject], bool], *, kind: ResourceKind = GATE
) -> KObject:
    """Wait on the client's shared watch (no polling) until ``predicate(obj)`` holds."""
    watch = await client.watch(kind, client.namespace)
    # A bound on a hung test, not a timing assertion: the predicate is judged per event.
    with anyio.fail_after(30):
        while True:
            changed = watch.next_change(name)
            obj = watch.get(name)
            if obj is not None and predicate(obj):
                return obj
            await changed.wait()


async def parked(*gates: Any) -> None:
    """Return once every gate handle has a waiter parked on its watch (checkpoints only:
    no wall clock)."""
    while any(g.statistics().waiting == 0 for g in gates):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


def judged(obj: KObject) -> dict[str, Any]:
    """The gate's status as the SDK judges it."""
    return state.judge(obj)


def entry(obj: KObject, name: str) -> dict[str, Any]:
    for e in judged(obj).get("conditions") or ():
        if e.get("name") == name:
            return dict(e)
    return {}


def phase_is(phase: str) -> Callable[[KObject], bool]:
    return lambda obj: judged(obj)["phase"] == phase


def message_has(name: str, text: str) -> Callable[[KObject], bool]:
    return lambda obj: text in str(entry(obj, name).get("message", ""))

"""``koncli watch``: the live table is redrawn by watch events (in-process, real server)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from konductor_sdk import Client, Identity
from konductor_sdk.cli._objects import KINDS
from konductor_sdk.cli._watchview import watch_view
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sdk(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="watcher")
    ) as client:
        yield client


async def test_table_is_redrawn_on_each_change(sdk: Client, namespace: str) -> None:
    renders: list[list[dict[str, Any]]] = []
    changed = anyio.Event()
    wanted: list[Any] = []

    def on_render(rows: list[dict[str, Any]]) -> None:
        renders.append(rows)
        if wanted and wanted[0](rows):
            changed.set()

    async def expect(check: Any) -> None:
        nonlocal changed
        changed = anyio.Event()
        wanted[:] = [check]
        if renders and check(renders[-1]):
            return
        with anyio.fail_after(30):
            await changed.wait()

    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    sem = Semaphore("gpu", permits=2, client=sdk)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: watch_view(
                sdk, list(KINDS.values()), namespace, console=console, on_render=on_render
            )
        )
        await expect(lambda rows: rows == [])
        await sem.create()
        await expect(lambda rows: [(r["kind"], r["name"]) for r in rows] == [("semaphore", "gpu")])
        permit = await sem.acquire(ttl=60)
        await expect(lambda rows: rows[0]["holders"] == ["watcher"])
        await permit.release()
        await expect(lambda rows: rows[0]["holders"] == [])
        tg.cancel_scope.cancel()
    # Kinds whose CRD is not installed are left out instead of hanging the view.
    assert "gpu" in out.getvalue()

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
from konductor_sdk.cli._objects import KINDS, RECORD_KINDS
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
    primitives = [rk for name, rk in KINDS.items() if name not in RECORD_KINDS]
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: watch_view(sdk, primitives, namespace, console=console, on_render=on_render)
        )
        await expect(lambda rows: rows == [])
        await sem.create()
        await expect(lambda rows: [(r["kind"], r["name"]) for r in rows] == [("semaphore", "gpu")])
        permit = await sem.acquire(weight=2, ttl=60)
        await expect(lambda rows: rows[0]["holders"] == ["watcher"])
        # A waiter is a Claim, not part of the object: the claims' watch redraws the table.
        waiter = anyio.CancelScope()
        tg.start_soon(lambda: _acquire_in(waiter, sem))
        await expect(lambda rows: (rows[0]["holders"], rows[0]["waiters"]) == (["watcher"], 1))
        waiter.cancel()
        await expect(lambda rows: rows[0]["waiters"] == 0)
        await permit.release()
        await expect(lambda rows: rows[0]["holders"] == [])
        tg.cancel_scope.cancel()
    # Kinds whose CRD is not installed are left out instead of hanging the view.
    assert "gpu" in out.getvalue()


async def _acquire_in(scope: anyio.CancelScope, sem: Semaphore) -> None:
    with scope:
        await sem.acquire(ttl=60)


async def test_ctrl_c_ends_koncli_watch_with_exit_0(
    kubeconfig: Path, namespace: str, tmp_path: Path, sdk: Client
) -> None:
    import signal
    import subprocess

    from _cli_support import KONCLI, koncli_env
    from anyio.streams.buffered import BufferedByteReceiveStream

    await Semaphore("gpu", permits=2, client=sdk).create()
    env = koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)
    async with await anyio.open_process(
        [KONCLI, "watch", "sem"], env=env, stdin=subprocess.DEVNULL
    ) as process:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(60):
            while b"gpu" not in await lines.receive_until(b"\n", 1 << 20):
                pass  # the first table is on screen: the watch is running
            process.send_signal(signal.SIGINT)
            code = await process.wait()
    assert code == 0


async def test_short_names_and_yaml_without_managed_fields(
    kubeconfig: Path, namespace: str, tmp_path: Path, sdk: Client
) -> None:
    import yaml
    from _cli_support import koncli, koncli_env

    env = koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)
    await Semaphore("gpu", permits=2, client=sdk).create()
    listed = await koncli(env, "sem", "list")
    assert listed.code == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert "NAMESPACE" not in header
    assert row.split()[:3] == ["semaphore", "gpu", "Ready"]  # a phase before any status write
    assert "NAMESPACE" in (await koncli(env, "semaphores", "list", "-A")).stdout.splitlines()[0]
    got = yaml.safe_load((await koncli(env, "sem", "get", "gpu", "-o", "yaml")).stdout)
    assert got["metadata"]["name"] == "gpu"
    assert "managedFields" not in got["metadata"]
    items = yaml.safe_load((await koncli(env, "sem", "list", "-o", "yaml")).stdout)["items"]
    assert all("managedFields" not in i["metadata"] for i in items)

"""Detached acquisitions close their client right after the grant: the renewer the SDK
spawned a moment before must end quietly (regression test for a core fix koncli needed)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from konductor_sdk import Client, Identity

pytestmark = pytest.mark.anyio


class NoStore:
    """Never called: the client only needs *a* store to count as connected."""

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected store call {name}")


async def test_a_task_spawned_just_before_close_does_not_fail_the_close() -> None:
    client = Client(store=NoStore(), namespace="ns", identity=Identity(holder="h"))  # type: ignore[arg-type]
    await client.connect()
    reached: list[str] = []

    async def background() -> None:
        reached.append("started")
        await client.connect()  # what a renewer's first watch() does
        reached.append("connected after close")  # pragma: no cover - must not happen

    client.spawn(anyio.sleep_forever)  # e.g. a shared watch: the client's task group runs
    await anyio.wait_all_tasks_blocked()
    client.spawn(background)  # e.g. the renewer of a permit granted a moment ago
    await client.aclose()  # used to raise RuntimeError("Client is closed") from the task
    assert reached == ["started"]

    with pytest.raises(RuntimeError, match="Client is closed"):
        await client.connect()  # a caller outside any cancelled scope still gets the error

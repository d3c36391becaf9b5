"""A failing background task of a client is logged and contained: the client's other
background work (its watches, session renewers, planners) goes on."""

from __future__ import annotations

import logging

import anyio
import pytest

from konductor_sdk import Client, Identity

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the client's host task is an asyncio task


class Told(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.event.set()


async def test_a_failing_background_task_does_not_end_the_others() -> None:
    client = Client(namespace="ns", identity=Identity("background"))
    ran = anyio.Event()
    go_on = anyio.Event()
    told = Told()
    logger = logging.getLogger("konductor_sdk.client")
    logger.addHandler(told)

    async def broken() -> None:
        raise ValueError("a bug in one background task")

    async def other() -> None:
        await go_on.wait()  # still waiting when the broken one fails
        ran.set()

    try:
        client.spawn(other)
        client.spawn(broken)
        with anyio.fail_after(10):
            await told.event.wait()
            go_on.set()
            await ran.wait()
        ran = anyio.Event()
        client.spawn(other)  # the client's task group still takes new work
        with anyio.fail_after(10):
            await ran.wait()
    finally:
        logger.removeHandler(told)
        await client.aclose()
    [record] = told.records
    assert "broken" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)

"""A response body cut short (a large LIST when the server restarts or the connection
drops) is "no answer", like a refused connection: a GET is retried, and what finally
escapes is an ``APIError`` with status 0, never an aiohttp exception that would end a
shared watch (or the operator's) as a crash instead of a retry."""

from __future__ import annotations

import json

import anyio
import anyio.abc
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from konductor_sdk import APIError
from konductor_sdk._kernel.objects import SEMAPHORE
from konductor_sdk._kernel.store import KubeStore

pytestmark = pytest.mark.anyio

BODY = json.dumps(
    {"kind": "SemaphoreList", "metadata": {"resourceVersion": "7"}, "items": []}
).encode()


async def serve(listener: anyio.abc.Listener[anyio.abc.SocketStream], answers: list[bool]) -> None:
    """Answer each request in turn: ``True`` whole, ``False`` cut short mid-body."""

    async def one(conn: anyio.abc.SocketStream) -> None:
        async with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await conn.receive()
            whole = answers.pop(0)
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
            ).encode()
            await conn.send(head + (BODY if whole else BODY[: len(BODY) // 2]))

    await listener.serve(one)


async def store_for(port: int, retries: int) -> tuple[ApiClient, KubeStore]:
    config = Configuration(host=f"http://127.0.0.1:{port}")
    api = ApiClient(config)
    return api, KubeStore(api, read_retries=retries)


async def test_a_cut_short_list_is_retried() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve, listener, [False, True])
        api, store = await store_for(port, retries=3)
        async with api:
            with anyio.fail_after(30):
                listed = await store.list(SEMAPHORE, "ns")
        assert listed.resource_version == "7"
        assert store.stats["get"] == 2
        tg.cancel_scope.cancel()


async def test_a_list_cut_short_every_time_raises_api_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve, listener, [False, False])
        api, store = await store_for(port, retries=2)
        async with api:
            with anyio.fail_after(30), pytest.raises(APIError) as info:
                await store.list(SEMAPHORE, "ns")
        assert info.value.status == 0
        assert "connection to the API server" in str(info.value)
        tg.cancel_scope.cancel()

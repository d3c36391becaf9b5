"""HTTP probes: only when enabled, only to allow-listed hosts, no redirects followed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from konductor_operator._gate_http import (
    DISABLED,
    AllowedPrefix,
    field_value,
    probe,
    refusal,
)
from konductor_sdk._machines.gate_spec import parse_spec

pytestmark = pytest.mark.anyio


def test_refusals() -> None:
    allowed = [AllowedPrefix.parse(p) for p in ("http://127.0.0.1:8080/", "https://Health.Example")]
    assert refusal("http://127.0.0.1:8080/x", enabled=False, allowed=allowed) == DISABLED
    assert refusal("http://127.0.0.1:8080/x", enabled=True, allowed=allowed) is None
    assert refusal("https://health.example/x", enabled=True, allowed=allowed) is None
    assert "not under any" in str(refusal("http://127.0.0.2/x", enabled=True, allowed=allowed))
    assert "credentials" in str(refusal("http://u:p@127.0.0.1/", enabled=True, allowed=allowed))
    assert "http(s)" in str(refusal("ftp://127.0.0.1/", enabled=True, allowed=allowed))


def test_field_value() -> None:
    data = {"status": {"ready": True, "items": [{"ok": 1}]}}
    assert field_value(data, "status.ready") == (True, True)
    assert field_value(data, "status.items.0.ok") == (True, 1)
    assert field_value(data, "status.items.1.ok") == (False, None)
    assert field_value(data, "nope") == (False, None)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    answer: dict[str, Any] = {"code": 200, "body": {"phase": "Ready", "n": 3}}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(answer["body"], status=answer["code"])

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:1/elsewhere")

    app = web.Application()
    app.router.add_get("/h", handler)
    app.router.add_get("/r", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", answer
    finally:
        await runner.cleanup()


def leaf(**http: Any) -> Any:
    return parse_spec({"conditions": [{"name": "p", "http": http}]}).leaves[0]


async def test_probe(server: tuple[str, dict[str, Any]]) -> None:
    base, answer = server
    async with aiohttp.ClientSession(trust_env=False) as session:
        assert (await probe(session, leaf(url=f"{base}/h"))).met
        json_ok = leaf(url=f"{base}/h", jsonField="phase", jsonValue='"Ready"')
        assert (await probe(session, json_ok)).met
        assert (await probe(session, leaf(url=f"{base}/h", jsonField="n", jsonValue="3"))).met
        wrong = await probe(session, leaf(url=f"{base}/h", jsonField="n", jsonValue="4"))
        assert not wrong.met
        assert "n = 3" in wrong.message
        missing = await probe(session, leaf(url=f"{base}/h", jsonField="x"))
        assert not missing.met
        assert "no field x" in missing.message
        moved = await probe(session, leaf(url=f"{base}/r"))
        assert not moved.met
        assert "status 302, want 200" in moved.message
        answer["code"] = 503
        down = await probe(session, leaf(url=f"{base}/h"))
        assert not down.met
        assert "status 503" in down.message
        refused = await probe(session, leaf(url="http://127.0.0.1:1/"))
        assert not refused.met
        assert refused.message == "GET 127.0.0.1: no HTTP answer"

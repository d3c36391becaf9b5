"""``/metrics``, ``/healthz`` and ``/readyz`` on one port (aiohttp, in the operator's loop).

``/metrics`` may be protected by a :class:`~._metrics_auth.MetricsAuthorizer`
(``--metrics-auth=kubernetes``); the probes never are (the kubelet sends no token).
"""

from __future__ import annotations

import ssl
from typing import Final

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST

from ._context import Health
from ._metrics import Metrics
from ._metrics_auth import MetricsAuthorizer

_TEXT: Final = "text/plain"


def make_app(
    metrics: Metrics, health: Health, *, authorizer: MetricsAuthorizer | None = None
) -> web.Application:
    """The probe/metrics application (separate so tests can drive it in-process)."""

    async def get_metrics(request: web.Request) -> web.Response:
        if authorizer is not None:
            decision = await authorizer.decide(request.headers.get("Authorization"))
            if decision.status != 200:
                headers = {"WWW-Authenticate": 'Bearer realm="konductor"'}
                return web.Response(
                    status=decision.status,
                    text=f"{decision.reason}\n",
                    content_type=_TEXT,
                    headers=headers if decision.status == 401 else None,
                )
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        # Answering at all proves the event loop turns; that is what liveness is about.
        return web.Response(text="ok\n", content_type=_TEXT)

    async def readyz(request: web.Request) -> web.Response:
        if health.ready():
            return web.Response(text="ok\n", content_type=_TEXT)
        waiting = ", ".join(health.not_ready()) or "API server connection"
        return web.Response(status=503, text=f"not ready: {waiting}\n", content_type=_TEXT)

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(
    metrics: Metrics,
    health: Health,
    *,
    host: str,
    port: int,
    authorizer: MetricsAuthorizer | None = None,
    tls: tuple[str, str] | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started(port)`` once listening.

    ``tls``: ``(certificate file, key file)`` to serve HTTPS (TLS 1.2+) instead of HTTP.

    Raises:
        OSError: the port cannot be bound, or the TLS files cannot be read.
    """
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*tls)
    app = make_app(metrics, health, authorizer=authorizer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        addresses = runner.addresses
        bound = int(addresses[0][1]) if addresses and isinstance(addresses[0], tuple) else port
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()

"""Operator hardening (issue 16, item 5), each part tested in-process:

* Gate HTTP probes: the allow-list is of URL prefixes (scheme, host, port, path prefix),
  and every connection-level failure reads the same, whatever the port was;
* CEL: a bounded pool whose per-gate queues are served round-robin;
* a reference the operator may not watch is asked about and logged once per interval.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from aiohttp import web

from konductor_operator._gate_http import NO_ANSWER, AllowedPrefix, probe, refusal
from konductor_operator._gate_refs import WatchPermissions
from konductor_sdk._kernel.cel_eval import MAX_PENDING_PER_KEY, CelOutcome, CelPool
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.objects import JOB, KObject, ResourceKind
from konductor_sdk._machines.gate_spec import parse_spec
from konductor_sdk.testing._certs import CertificateAuthority

pytestmark = pytest.mark.anyio
SECRET = ResourceKind("", "v1", "secrets", "Secret")

# -- the allow-list ----------------------------------------------------------------------------

ALLOW = [AllowedPrefix.parse("http://127.0.0.1:8080/health"), AllowedPrefix.parse("https://svc")]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/health", True),
        ("http://127.0.0.1:8080/health/", True),
        ("http://127.0.0.1:8080/health/db?verbose=1", True),
        ("https://svc/anything", True),
        ("https://svc:443/anything", True),  # the scheme's default port, spelled out
        ("http://127.0.0.1:8080/healthz", False),  # a longer name is not below the prefix
        ("http://127.0.0.1:8080/health-admin", False),
        ("http://127.0.0.1:8080/admin", False),  # another path of an allowed host
        ("http://127.0.0.1:9090/health", False),  # another port of an allowed host
        ("http://127.0.0.1/health", False),
        ("https://127.0.0.1:8080/health", False),  # another scheme
        ("http://svc/anything", False),
        ("https://svc:8443/anything", False),
        ("http://127.0.0.1:8080/health/../admin", False),  # dot segments are resolved first
        ("http://127.0.0.1:8080/health/%2e%2e/admin", False),  # and may not be hidden
        ("http://127.0.0.1:8080/health/..%2Fadmin", False),
        ("http://127.0.0.1:8080/health\\..\\admin", False),
        ("http://user:pw@127.0.0.1:8080/health", False),
    ],
)
def test_the_allow_list_is_of_url_prefixes(url: str, allowed: bool) -> None:
    assert (refusal(url, enabled=True, allowed=ALLOW) is None) is allowed


@pytest.mark.parametrize(
    "entry",
    ["127.0.0.1", "svc.local:8080", "ftp://h/", "http:///x", "http://h/?q=1", "http://u@h/"],
)
def test_allow_list_entries_must_be_url_prefixes(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="URL prefixes"):
        AllowedPrefix.parse(entry)


# -- one message for every connection-level failure --------------------------------------------


def leaf(url: str) -> Any:
    spec = {"conditions": [{"name": "p", "http": {"url": url, "timeoutSeconds": 1}}]}
    return parse_spec(spec).leaves[0]


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()  # nothing listens there any more
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (the kernel's backlog) and never answers."""
    sock = listening()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, int]]:
    """An HTTP server, a TLS server and a server that answers garbage, on loopback."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    ca = CertificateAuthority.generate()
    pair = ca.issue_serving_cert(dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    pair.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await plain.start()
    await tls.start()

    async def garbage(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    ports = {
        "plain": plain._server.sockets[0].getsockname()[1],  # type: ignore[union-attr]
        "tls": tls._server.sockets[0].getsockname()[1],  # type: ignore[union-attr]
        "garbage": listener.extra(anyio.abc.SocketAttribute.local_port),
    }
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, garbage)
        try:
            yield ports
        finally:
            tg.cancel_scope.cancel()
            await runner.cleanup()


async def test_connection_failures_are_indistinguishable(
    servers: dict[str, int], closed_port: int, silent_port: int
) -> None:
    async with aiohttp.ClientSession(trust_env=False) as session:
        answered = await probe(session, leaf(f"http://127.0.0.1:{servers['plain']}/"))
        assert answered.met
        failures = {
            "closed port": f"http://127.0.0.1:{closed_port}/",
            "nothing answers": f"http://127.0.0.1:{silent_port}/",
            "https to a plain HTTP port": f"https://127.0.0.1:{servers['plain']}/",
            "untrusted TLS certificate": f"https://127.0.0.1:{servers['tls']}/",
            "not HTTP": f"http://127.0.0.1:{servers['garbage']}/",
            "unresolvable name": "http://no-such-host.invalid/",
        }
        messages = {
            what: (await probe(session, leaf(url))).message for what, url in failures.items()
        }
    hosts = {"unresolvable name": "no-such-host.invalid"}
    for what, message in messages.items():
        assert message == f"GET {hosts.get(what, '127.0.0.1')}: {NO_ANSWER}", (what, message)


# -- the CEL pool ------------------------------------------------------------------------------


class GatedEvaluator:
    """Evaluates once the test releases the expression; records what ran, concurrently."""

    def __init__(self, log: list[str], gates: dict[str, anyio.Event], live: list[int]) -> None:
        self.log, self.gates, self.live = log, gates, live

    async def evaluate(self, expression: str, obj: Mapping[str, Any]) -> CelOutcome:
        self.live[0] += 1
        self.live[1] = max(self.live[1], self.live[0])
        try:
            await self.gates.setdefault(expression, anyio.Event()).wait()
        finally:
            self.live[0] -= 1
        self.log.append(expression)
        return CelOutcome(True)

    async def aclose(self) -> None:
        pass


async def test_a_gate_with_many_slow_expressions_cannot_starve_another() -> None:
    order: list[str] = []
    gates: dict[str, anyio.Event] = {}
    live = [0, 0]
    async with (
        CelPool(workers=1, factory=lambda: GatedEvaluator(order, gates, live)) as pool,
        anyio.create_task_group() as tg,
    ):
        for i in range(5):
            tg.start_soon(pool.evaluate, "gate-a", f"a{i}", {})
        await wait_for(lambda: pool.running == 1 and pool.pending("gate-a") == 4)
        tg.start_soon(pool.evaluate, "gate-b", "b0", {})
        await wait_for(lambda: pool.pending("gate-b") == 1)
        for expression in ["a0", "a1", "a2", "a3", "a4", "b0"]:
            gates.setdefault(expression, anyio.Event()).set()
    # gate-b's one expression ran right after the evaluation that was running, not after
    # all of gate-a's queue (which a single FIFO queue or lock would do).
    assert order == ["a0", "b0", "a1", "a2", "a3", "a4"]
    assert live[1] == 1


async def test_the_pool_runs_at_most_its_workers_at_once() -> None:
    order: list[str] = []
    gates: dict[str, anyio.Event] = {}
    live = [0, 0]
    async with (
        CelPool(workers=2, factory=lambda: GatedEvaluator(order, gates, live)) as pool,
        anyio.create_task_group() as tg,
    ):
        for gate in range(4):
            for i in range(3):
                tg.start_soon(pool.evaluate, f"g{gate}", f"g{gate}-{i}", {})
        await wait_for(lambda: pool.running == 2)
        for gate in range(4):
            for i in range(3):
                gates.setdefault(f"g{gate}-{i}", anyio.Event()).set()
    assert live[1] == 2
    assert sorted(order) == sorted(f"g{g}-{i}" for g in range(4) for i in range(3))
    # Round-robin: every gate's first expression ran before any gate's second.
    firsts = [order.index(f"g{g}-0") for g in range(4)]
    seconds = [order.index(f"g{g}-1") for g in range(4)]
    assert max(firsts) < min(seconds)


async def test_a_gate_can_queue_only_so_many_evaluations() -> None:
    gates: dict[str, anyio.Event] = {}
    async with (
        CelPool(workers=1, factory=lambda: GatedEvaluator([], gates, [0, 0])) as pool,
        anyio.create_task_group() as tg,
    ):
        for i in range(MAX_PENDING_PER_KEY + 1):
            tg.start_soon(pool.evaluate, "greedy", f"e{i}", {})
        await wait_for(lambda: pool.pending("greedy") == MAX_PENDING_PER_KEY)
        refused = await pool.evaluate("greedy", "one-more", {})
        assert refused.error is not None
        assert "pending" in refused.error
        for event in list(gates.values()):
            event.set()
        for i in range(MAX_PENDING_PER_KEY + 1):
            gates.setdefault(f"e{i}", anyio.Event()).set()


async def test_the_real_pool_evaluates_in_worker_processes() -> None:
    async with CelPool(workers=2) as pool:
        obj = {"status": {"ready": True}}
        assert (await pool.evaluate("g", "object.status.ready", obj)).value is True
        assert (await pool.evaluate("h", "object.status.ready == false", obj)).value is False


async def wait_for(condition: Any) -> None:
    """Let the pool's tasks run until ``condition()`` (checkpoints only, no clock)."""
    with anyio.fail_after(10):  # a bound on a hung test, not a timing assertion
        # Polling a condition on other tasks' state, one scheduler pass at a time: nothing
        # signals these states, and no wall clock is involved.
        while not condition():
            await anyio.lowlevel.checkpoint()


# -- what the operator may watch ---------------------------------------------------------------


class ReviewStore:
    """Answers SelfSubjectAccessReviews: only ``jobs`` may be listed and watched."""

    def __init__(self) -> None:
        self.reviews: list[dict[str, Any]] = []

    async def create(self, kind: ResourceKind, namespace: str | None, body: Any) -> KObject:
        attributes = body["spec"]["resourceAttributes"]
        self.reviews.append(attributes)
        return KObject({"status": {"allowed": attributes["resource"] == "jobs"}})


def test_secrets_are_not_watched_by_the_shipped_operator_role() -> None:
    # The premise of the next test: the generated ClusterRole does not let it read Secrets.
    text = (Path(__file__).resolve().parents[2] / "deploy/rbac/operator-role.yaml").read_text()
    assert "secrets" not in text


async def test_a_forbidden_reference_is_asked_about_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = ReviewStore(), FakeClock()
    permissions = WatchPermissions(store, clock, interval=300)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="konductor_operator.gate")
    for _ in range(60):  # the gate is re-judged every 5 s for 5 minutes
        why = await permissions.denied(SECRET, "team-a")
        assert why == "the operator may not list secrets in namespace team-a"
        clock.advance(4.99)
    assert permissions.logged == 1
    assert len(store.reviews) == 1
    assert len([r for r in caplog.records if "may not list secrets" in r.getMessage()]) == 1
    clock.advance(300)
    assert await permissions.denied(SECRET, "team-a") is not None
    assert (permissions.logged, len(store.reviews)) == (2, 2)
    # What it may watch is asked about (list and watch) and not logged.
    assert await permissions.denied(JOB, "team-a") is None
    assert [r["verb"] for r in store.reviews[2:]] == ["list", "watch"]
    assert permissions.logged == 2

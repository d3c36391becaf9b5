"""The blocking facade: the same Lease and LeaderElector, driven from plain threads.

The facade runs everything in its own portal loop; these tests make blocking clients
(``konductor_sdk.sync.Client``) and call the blocking API from worker threads of the test's
loop.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from konductor_sdk import ConfigurationError, Identity, LeadershipLost, WouldBlock
from konductor_sdk._kernel.objects import LEASE
from konductor_sdk.election import ElectionConfig
from konductor_sdk.sync import Client, _portal
from konductor_sdk.sync.lease import LeaderElector, Lease, Term


def portal_client(kubeconfig: Path, namespace: str, holder: str) -> Client:
    return Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder=holder))


def test_bad_input_fails_in_the_callers_thread() -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        Lease("x", ttl=0)


@pytest.mark.anyio
async def test_blocking_lease_between_threads(kubeconfig: Path, namespace: str) -> None:
    def scenario() -> list[str]:
        a = portal_client(kubeconfig, namespace, "thread-a")
        b = portal_client(kubeconfig, namespace, "thread-b")
        log: list[str] = []
        first = Lease("sync-lease", ttl=30, client=a)
        second = Lease("sync-lease", ttl=30, client=b)
        with first as held:
            log.append(f"a {held.token}")
            with pytest.raises(WouldBlock, match="held by thread-a"):
                second.acquire_nowait()
            waiter = threading.Thread(target=lambda: _hold(second, log))
            waiter.start()
            _until(lambda: bool(first.status().candidates))
            log.append("a leaves")
        waiter.join(30)
        status = first.status()
        log.append(f"free={status.holder is None} token={status.fencing_token}")
        for c in (a, b):
            c.close()
        return log

    log = await anyio.to_thread.run_sync(scenario)
    assert log == ["a 1", "a leaves", "b 2", "free=True token=2"]


def _hold(lease: Lease, log: list[str]) -> None:
    with lease as held:
        log.append(f"b {held.token}")


def _until(predicate: object) -> None:
    import time

    deadline = time.monotonic() + 30
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.anyio
async def test_blocking_lease_reports_loss_on_exit(kubeconfig: Path, namespace: str) -> None:
    def scenario() -> str:
        c = portal_client(kubeconfig, namespace, "sync-victim")
        lease = Lease("sync-lost", ttl=30, client=c)

        def body() -> None:
            with lease as held:
                lease.delete()  # the holder's renewer notices; the thread keeps running
                _until(lambda: held.lost)

        try:
            with pytest.raises(LeadershipLost, match="token 1") as info:
                body()
            return str(info.value)
        finally:
            c.close()

    assert "deleted" in await anyio.to_thread.run_sync(scenario)


@pytest.mark.anyio
async def test_blocking_elector_term_and_stop(kubeconfig: Path, namespace: str) -> None:
    def scenario() -> tuple[list[str], str]:
        c = portal_client(kubeconfig, namespace, "sync-elector")
        log: list[str] = []
        config = ElectionConfig("sync-elect", identity="sync-1", lease_duration=3600)

        def lead(term: Term) -> None:
            log.append(f"started {term.token}")
            elector.stop()  # e.g. a shutdown request handled inside the leader's loop
            assert term.wait(30)
            log.append("term over")

        elector = LeaderElector(
            config,
            client=c,
            on_started_leading=lead,
            on_stopped_leading=lambda: log.append("stopped"),
            on_new_leader=lambda who: log.append(f"leader {who}"),
        )
        runner = threading.Thread(target=elector.run)
        runner.start()
        runner.join(30)
        assert not runner.is_alive()
        holder = _portal.run(c.store.get, LEASE, namespace, "sync-elect").status["holder"]
        c.close()
        return log, holder

    log, holder = await anyio.to_thread.run_sync(scenario)
    assert [e for e in log if not e.startswith("leader")] == ["started 1", "term over", "stopped"]
    assert "leader sync-1" in log
    assert holder == ""  # released on the way out

"""Separate processes on one semaphore, with faults (issue 13).

* 32 clients in 4 worker processes, plus one holder process killed with SIGKILL while
  holding: an independent observer proves from every stored version that no slot was ever
  held twice and tokens only grew, and the killed holder's grant is reaped with its session.
* A queued waiter stopped (SIGSTOP) past its session's TTL, with and without an operator
  reaping meanwhile: its body never runs on a grant of the expired session.
* A holder killed right after its grant is reaped one session TTL after its last renewal,
  not two: the grant names the session its claim named.

The test plays the operator's reaping (``SessionReaper``): a session is expired when its
``renewCount`` has not changed for ``ttlSeconds`` on the test's own monotonic clock; then
it is deleted, its claims are deleted, and the grants naming it are removed.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from konductor_sdk import APIError, Client, Identity
from konductor_sdk._kernel.claims import SESSION_LABEL
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.objects import CLAIM, MUTEX, RWMUTEX, SEMAPHORE, SESSION, KObject
from konductor_sdk._machines import semaphore_plan as planning
from konductor_sdk.semaphore import Semaphore
from tests.integration._semaphore_helpers import Observer, holders, until, until_queued

pytestmark = pytest.mark.anyio

WORKER = r"""
import json, random, sys
import anyio
from konductor_sdk import Client, Identity, PermitLost
from konductor_sdk.semaphore import Semaphore

kubeconfig, namespace, name, prefix, clients, cycles, seed = sys.argv[1:8]

async def client_loop(ident, rng, out):
    async with Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(ident)) as c:
        sem = Semaphore(name, client=c, ttl=30)
        for _ in range(int(cycles)):
            weight = rng.choice((1, 1, 2))
            try:
                async with sem.hold(weight=weight, priority=rng.choice((0, 1))) as p:
                    out.append({"key": p.key, "token": p.token, "weight": weight})
                    await anyio.sleep(rng.uniform(0, 0.01))
            except PermitLost:
                out.append({"lost": True})

async def main():
    rng = random.Random(int(seed))
    out = []
    async with anyio.create_task_group() as tg:
        for j in range(int(clients)):
            tg.start_soon(client_loop, f"{prefix}-c{j}", random.Random(rng.random()), out)
    print(json.dumps(out))

anyio.run(main)
"""

HOLDER = r"""
import sys, time
import anyio
from konductor_sdk import Client, Identity
from konductor_sdk.semaphore import Semaphore

async def main():
    kubeconfig, namespace, name, ident, ttl = sys.argv[1:6]
    c = Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(ident))
    async with Semaphore(name, client=c, ttl=int(ttl)).hold() as p:
        # The body's first line: what it runs under, and whether that is still valid.
        print("BODY", p.key, p.session, int(p.lost), flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


class SessionReaper:
    """What the operator does when a session ends, restated for the test."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.tracker = ExpiryTracker(client.clock)
        self.reaped: dict[str, float] = {}
        self.enabled = True
        self.changed = anyio.Event()

    async def wait_reaped(self, name: str) -> None:
        while name not in self.reaped:
            await self.changed.wait()

    async def run(self) -> None:
        client = self.client
        watch = await client.watch(SESSION, client.namespace)
        while True:
            changed = watch.next_any_change()
            live = []
            for s in watch.objects():
                ttl = s.spec.get("ttlSeconds", 0)
                if ttl > 0:
                    self.tracker.observe(s.name, s.spec.get("renewCount"), ttl)
                    live.append(s.name)
            self.tracker.retain(live)
            if self.enabled:
                for name in [n for n in live if self.tracker.expired(n)]:
                    session = watch.get(name)
                    if session is not None:
                        await self.reap(session)
            deadlines = [at for n in live if (at := self.tracker.expires_at(n)) is not None]
            wake = (
                max(0.01, min(deadlines) - client.clock.monotonic() + 0.01) if deadlines else None
            )
            with anyio.move_on_after(wake):
                await changed.wait()

    async def reap(self, session: KObject) -> None:
        client, ns = self.client, self.client.namespace
        try:  # with the resourceVersion judged: a renewal in between wins
            await client.store.delete(
                SESSION, ns, session.name, resource_version=session.resource_version
            )
        except APIError:
            return
        # Its claims first (a claim must not be seen waiting after its grant is gone)...
        await client.store.delete_collection(
            CLAIM, ns, label_selector=f"{SESSION_LABEL}={session.name}"
        )
        # ...then the grants naming it.
        for kind in (SEMAPHORE, MUTEX, RWMUTEX):
            for obj in (await client.store.list(kind, ns)).items:
                ops = [
                    op
                    for slot, e in holders(obj).items()
                    if e.get("session") == session.name
                    for op in planning.release_patch(int(slot), e["token"])
                ]
                if ops:
                    await client.store.patch(
                        kind, ns, obj.name, ops, patch_type="json", subresource="status"
                    )
        self.reaped[session.name] = client.clock.monotonic()
        self.changed.set()
        self.changed = anyio.Event()


async def start(script: str, *args: str) -> tuple[Process, BufferedByteReceiveStream]:
    proc = await anyio.open_process([sys.executable, "-c", script, *args])
    assert proc.stdout is not None
    return proc, BufferedByteReceiveStream(proc.stdout)


async def line(stream: BufferedByteReceiveStream) -> list[str]:
    with anyio.fail_after(90):
        return (await stream.receive_until(b"\n", 4096)).decode().split()


async def test_processes_share_a_pool_safely_and_a_killed_holder_is_reaped(
    kubeconfig: Path, namespace: str
) -> None:
    limit, n_procs, per_proc, cycles = 3, 4, 8, 6
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("test")
    ) as client:
        await Semaphore("shared", permits=limit, client=client).create()
        begin = await client.store.get(SEMAPHORE, namespace, "shared")
        observer = Observer(client, "shared")
        reaper = SessionReaper(client)
        args = [str(kubeconfig), namespace, "shared"]
        outputs: list[Any] = []

        async def worker(i: int) -> None:
            cmd = [sys.executable, "-c", WORKER, *args, f"p{i}", str(per_proc), str(cycles), str(i)]
            done = await anyio.run_process(cmd, check=True)
            outputs.extend(json.loads(done.stdout))

        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                await tg.start(observer.run, begin.resource_version)
                tg.start_soon(reaper.run)
                doomed, out = await start(HOLDER, *args, "doomed", "2")
                body = await line(out)
                doomed_key, doomed_session = body[1], body[2]
                doomed.send_signal(signal.SIGKILL)
                await doomed.wait()
                async with anyio.create_task_group() as workers:
                    for i in range(n_procs):
                        workers.start_soon(worker, i)
                final = await until(client, "shared", lambda o: not holders(o))
                await observer.caught_up(final.resource_version)
                tg.cancel_scope.cancel()
    grants = [o for o in outputs if "token" in o]
    tokens = {f"{e['slot']}#{e['token']}": e for _, e in observer.grants}
    assert observer.violations == []
    assert doomed_key in tokens  # it did hold...
    assert doomed_session in reaper.reaped  # ...and was reaped with its session
    assert all(g["key"] in tokens for g in grants)
    assert sorted(e["token"] for e in tokens.values()) == list(range(1, len(tokens) + 1))
    assert len(grants) == n_procs * per_proc * cycles  # every cycle was granted once
    assert len(tokens) == len(grants) + 1  # + the doomed holder's grant


@pytest.mark.parametrize("operator", [False, True], ids=["no-operator", "operator-reaps"])
async def test_a_waiter_stopped_past_its_ttl_never_runs_on_the_expired_grant(
    kubeconfig: Path, namespace: str, operator: bool
) -> None:
    ttl = 3
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("test")
    ) as client:
        sem = Semaphore("frozen", permits=1, client=client)
        held = await sem.acquire()
        begin = await client.store.get(SEMAPHORE, namespace, "frozen")
        observer = Observer(client, "frozen")
        reaper = SessionReaper(client)
        reaper.enabled = operator
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                await tg.start(observer.run, begin.resource_version)
                tg.start_soon(reaper.run)
                sleeper, out = await start(
                    HOLDER, str(kubeconfig), namespace, "frozen", "sleeper", str(ttl)
                )
                (claim,) = await until_queued(client, "frozen", lambda c: len(c) == 1)
                first_session = claim.spec["session"]
                sleeper.send_signal(signal.SIGSTOP)
                # Frozen while queued, past its TTL (a fault, so this waits on the clock).
                stopped_at = time.monotonic()
                await held.release()
                if operator:
                    with anyio.fail_after(30):
                        await reaper.wait_reaped(first_session)
                    # Meanwhile someone else may use the permit: it is not the sleeper's.
                    other = await sem.acquire()
                    await other.release()
                await anyio.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - stopped_at)))
                sleeper.send_signal(signal.SIGCONT)
                body = await line(out)
                sleeper.kill()
                await sleeper.wait()
                final = await client.store.get(SEMAPHORE, namespace, "frozen")
                await observer.caught_up(final.resource_version)
                tg.cancel_scope.cancel()
    _, key, session, lost = body
    assert session != first_session  # queued again under a fresh session...
    assert lost == "0"  # ...and valid when its body started
    assert observer.violations == []
    # A grant of the expired session, if its resumed process wrote one before noticing,
    # was given back: the body ran only on the later grant.
    assert key == [f"{e['slot']}#{e['token']}" for _, e in observer.grants][-1]


async def test_a_killed_holder_is_reaped_one_ttl_after_its_last_renewal(
    kubeconfig: Path, namespace: str
) -> None:
    """Issue 13 (4): the grant a waiter gets names the session its claim named, so its
    liveness carries over: reaped one TTL after the process stopped renewing, not two."""
    ttl = 4
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("test")
    ) as client:
        sem = Semaphore("carry", permits=1, client=client)
        held = await sem.acquire()
        reaper = SessionReaper(client)
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reaper.run)
                victim, out = await start(
                    HOLDER, str(kubeconfig), namespace, "carry", "victim", str(ttl)
                )
                (claim,) = await until_queued(client, "carry", lambda c: len(c) == 1)
                await held.release()
                body = await line(out)
                victim.send_signal(signal.SIGKILL)
                killed_at = client.clock.monotonic()
                await victim.wait()
                session = body[2]
                assert session == claim.spec["session"]
                await reaper.wait_reaped(session)
                obj = await until(client, "carry", lambda o: not holders(o), seconds=60)
                assert obj.status["fencingToken"] == 2
                tg.cancel_scope.cancel()
    reaped_after = reaper.reaped[session] - killed_at
    # Its last renewal was at most ttl/3 before the kill; the observer's clock starts
    # when it saw that renewal. One TTL (plus watch delivery), never two.
    assert reaped_after < ttl * 1.5, reaped_after

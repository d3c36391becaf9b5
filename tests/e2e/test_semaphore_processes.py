"""Separate processes on one semaphore: 32 clients in 4 worker processes, plus one holder
process killed with SIGKILL while holding. The test plays the operator's reaper (generic
expiry on its own monotonic clock + the kind's registered normalize) and an independent
checker that proves, from every version the server stored, that the held weight never
exceeded the limit and that fencing tokens only grew."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.objects import SEMAPHORE, KObject
from konductor_sdk._machines.rules import registered
from konductor_sdk.semaphore import Semaphore

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

DOOMED = r"""
import sys
import anyio
from konductor_sdk import Client, Identity
from konductor_sdk.semaphore import Semaphore

async def main():
    kubeconfig, namespace, name = sys.argv[1:4]
    c = Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("doomed"))
    p = await Semaphore(name, client=c, ttl=2).acquire()
    print("HELD", p.key, flush=True)
    await anyio.sleep_forever()

anyio.run(main)
"""


class Checker:
    def __init__(self, limit: int) -> None:
        self.limit, self.last_rv, self.max_token = limit, 0, 0
        self.tokens: dict[str, int] = {}
        self.violations: list[str] = []
        self.changed = anyio.Event()

    def record(self, obj: KObject) -> None:
        rv = int(obj.resource_version)
        if rv <= self.last_rv:
            self.violations.append(f"rv {rv} after {self.last_rv}")
        self.last_rv = rv
        holders: dict[str, Any] = obj.status.get("holders") or {}
        used = sum(int(e["weight"]) for e in holders.values())
        if used > self.limit:
            self.violations.append(f"rv {rv}: {used} > {self.limit}")
        for token, key in sorted((int(e["token"]), k) for k, e in holders.items()):
            if key not in self.tokens:
                if token <= self.max_token:
                    self.violations.append(f"rv {rv}: token {token} after {self.max_token}")
                self.tokens[key], self.max_token = token, max(token, self.max_token)
            elif self.tokens[key] != token:
                self.violations.append(f"rv {rv}: {key} changed token")
        self.changed.set()
        self.changed = anyio.Event()


async def reaper(client: Client, name: str) -> None:
    """The operator's reaping, generically: expiry judged on our own monotonic clock from
    when we first saw each renewCount; then the kind's registered normalize."""
    rules = registered()[SEMAPHORE.kind]
    tracker = ExpiryTracker(client.clock)
    watch = await client.watch(SEMAPHORE, client.namespace)
    while True:
        changed = watch.next_change(name)
        obj = watch.get(name)
        live = []
        for field in rules.entry_maps:
            for key, e in (obj.status.get(field) or {}).items() if obj else ():
                if int(e.get("ttlSeconds", 0)) > 0:
                    tracker.observe((field, key), e.get("renewCount"), e["ttlSeconds"])
                    live.append((field, key))
        tracker.retain(live)
        expired = [fk for fk in live if tracker.expired(fk)]
        if expired:

            def reap(o: KObject, gone: list[tuple[str, str]] = expired) -> dict[str, Any]:
                st = json.loads(json.dumps(dict(o.status)))
                for field, key in gone:
                    (st.get(field) or {}).pop(key, None)
                return rules.normalize(o.spec, st)

            await update_status(client, SEMAPHORE, client.namespace, name, reap)
            continue
        # Sleep until the next change or the next possible expiry, whichever comes first.
        deadlines = [at for fk in live if (at := tracker.expires_at(fk)) is not None]
        wake = min(deadlines) - client.clock.monotonic() + 0.01 if deadlines else None
        with anyio.move_on_after(wake):
            await changed.wait()


async def test_processes_share_a_pool_safely_and_a_killed_holder_is_reaped(
    kubeconfig: Path, namespace: str
) -> None:
    limit, n_procs, per_proc, cycles = 3, 4, 8, 6
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("test")
    ) as client:
        await Semaphore("shared", permits=limit, client=client).create()
        start = await client.store.get(SEMAPHORE, namespace, "shared")
        checker = Checker(limit)

        async def check() -> None:
            async for event in client.store.watch(
                SEMAPHORE, namespace, resource_version=start.resource_version
            ):
                if event.type != "BOOKMARK":
                    checker.record(event.object)

        args = [str(kubeconfig), namespace, "shared"]
        outputs: list[Any] = []

        async def worker(i: int) -> None:
            cmd = [sys.executable, "-c", WORKER, *args, f"p{i}", str(per_proc), str(cycles), str(i)]
            done = await anyio.run_process(cmd, check=True)
            outputs.extend(json.loads(done.stdout))

        with anyio.fail_after(150):
            async with anyio.create_task_group() as tg:
                tg.start_soon(check)
                doomed = await anyio.open_process([sys.executable, "-c", DOOMED, *args])
                assert doomed.stdout is not None
                lines = BufferedByteReceiveStream(doomed.stdout)
                line = (await lines.receive_until(b"\n", 4096)).decode()
                doomed_key = line.split()[1]
                doomed.send_signal(signal.SIGKILL)
                await doomed.wait()
                tg.start_soon(reaper, client, "shared")
                async with anyio.create_task_group() as workers:
                    for i in range(n_procs):
                        workers.start_soon(worker, i)
                final = await client.store.get(SEMAPHORE, namespace, "shared")
                while checker.last_rv < int(final.resource_version):
                    await checker.changed.wait()
                tg.cancel_scope.cancel()
    grants = [o for o in outputs if "token" in o]
    assert checker.violations == []
    assert doomed_key in checker.tokens  # it did hold...
    assert doomed_key not in (final.status.get("holders") or {})  # ...and was reaped
    assert all(checker.tokens.get(g["key"]) == g["token"] for g in grants)
    assert sorted(checker.tokens.values()) == list(range(1, checker.max_token + 1))
    assert len(grants) == n_procs * per_proc * cycles  # every cycle was granted once
    assert checker.max_token == len(grants) + 1  # + the doomed holder's grant

"""Konductor in one minute, on an embedded control plane (``make demo``).

Starts a real kube-apiserver + etcd on loopback, installs the CRDs, then:

1. six workers (each its own client, like six pods) share a two-permit Semaphore, while an
   independent watcher checks from the server's own state that no more than two ever held;
2. four training ranks arrive at a Barrier at different times and leave it together;
3. three replicas run a leader election; the leader steps down gracefully and a standby
   takes over at once, without waiting out the lease;
4. the objects as ``kubectl get`` would list them.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import anyio

from konductor_sdk import Barrier, Client, Identity, Lease, Semaphore
from konductor_sdk.election import ElectionConfig, LeaderElector
from konductor_sdk.testing import LocalControlPlane

NAMESPACE = "demo"


def say(section: str, text: str) -> None:
    print(f"[{section:9}] {text}", flush=True)


def make_client(kubeconfig: Path, holder: str) -> Client:
    return Client(kubeconfig=kubeconfig, namespace=NAMESPACE, identity=Identity(holder=holder))


async def semaphore_demo(kubeconfig: Path) -> None:
    setup = make_client(kubeconfig, "setup")
    try:
        await Semaphore("gpu-pool", permits=2, client=setup).create()
    finally:
        await setup.aclose()
    peak = 0
    observer = make_client(kubeconfig, "observer")

    async def watch_the_pool() -> None:
        nonlocal peak
        async for status in Semaphore("gpu-pool", client=observer).changes():
            peak = max(peak, sum(h.weight for h in status.holders))

    async def worker(i: int) -> None:
        client = make_client(kubeconfig, f"worker-{i}")
        try:
            sem = Semaphore("gpu-pool", client=client)
            for _ in range(2):
                async with sem as permit:
                    say(
                        "semaphore", f"worker-{i} holds a GPU permit (fencing token {permit.token})"
                    )
                    await anyio.sleep(random.uniform(0.05, 0.2))
        finally:
            await client.aclose()

    async with anyio.create_task_group() as watching:
        watching.start_soon(watch_the_pool)
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(worker, i)
        watching.cancel_scope.cancel()
    await observer.aclose()
    say("semaphore", f"12 grants done; most permits ever held at once, seen by the watcher: {peak}")
    assert peak <= 2, "over-grant!"


async def barrier_demo(kubeconfig: Path) -> None:
    async def rank(r: int) -> None:
        client = make_client(kubeconfig, f"rank-{r}")
        try:
            barrier = Barrier("epoch-end", expected=4, client=client, party=f"rank-{r}")
            await anyio.sleep(0.3 * r)  # ranks finish their epoch at different times
            say("barrier", f"rank-{r} arrives")
            index = await barrier.wait()
            say("barrier", f"rank-{r} released (arrival index {index})")
        finally:
            await client.aclose()

    async with anyio.create_task_group() as tg:
        for r in range(4):
            tg.start_soon(rank, r)


async def election_demo(kubeconfig: Path) -> None:
    terms = 0
    all_done = anyio.Event()

    async def replica(name: str) -> None:
        client = make_client(kubeconfig, name)
        done = anyio.Event()

        async def lead(*_: object) -> None:
            nonlocal terms
            terms += 1
            say("election", f"{name} is the leader; serving for a moment, then stepping down")
            await anyio.sleep(0.5)
            done.set()

        def stopped() -> None:
            say("election", f"{name} stopped leading")

        config = ElectionConfig(
            name="scheduler", identity=name, lease_duration=6, renew_deadline=4, retry_period=1
        )
        elector = LeaderElector(
            config, client=client, on_started_leading=lead, on_stopped_leading=stopped
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(elector.run)
                await done.wait()  # a leader exits after its turn: graceful release
                tg.cancel_scope.cancel()
            if terms == 3:
                all_done.set()
        finally:
            await client.aclose()

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for name in ("replica-a", "replica-b", "replica-c"):
            tg.start_soon(replica, name)
    elapsed = time.monotonic() - started
    say(
        "election",
        f"3 leaders in turn in {elapsed:.1f}s with a 6s lease: handoffs did not wait out the TTL",
    )


async def show(kubeconfig: Path) -> None:
    client = make_client(kubeconfig, "viewer")
    try:
        sem = await Semaphore("gpu-pool", client=client).status()
        bar = await Barrier("epoch-end", expected=None, client=client).status()
        lease = await Lease("scheduler", client=client).status()
    finally:
        await client.aclose()
    print()
    print("$ kubectl get semaphores,barriers,klease -n demo")
    print(f"{'NAME':28} {'PHASE':8} {'STATE':34} {'FENCING TOKEN':>13}")
    rows = [
        ("semaphore/gpu-pool", sem.phase, f"in use {sem.in_use}/{sem.limit}", sem.fencing_token),
        (
            "barrier/epoch-end",
            bar.phase,
            f"generation {bar.generation}, {bar.arrived}/{bar.expected} arrived",
            "-",
        ),
        (
            "lease/scheduler",
            "Held" if lease.holder else "Free",
            f"{lease.transitions} transitions",
            lease.fencing_token,
        ),
    ]
    for name, phase, state, token in rows:
        print(f"{name:28} {phase:8} {state:34} {token!s:>13}")


async def main() -> None:
    started = time.monotonic()
    async with LocalControlPlane() as cp:
        say(
            "setup", f"kube-apiserver + etcd up at {cp.server} in {time.monotonic() - started:.1f}s"
        )
        await anyio.to_thread.run_sync(cp.create_namespace, NAMESPACE)
        kubeconfig = cp.kubeconfig_path
        await semaphore_demo(kubeconfig)
        await barrier_demo(kubeconfig)
        await election_demo(kubeconfig)
        await show(kubeconfig)
    say("setup", "control plane stopped; nothing left running")


if __name__ == "__main__":
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        sys.exit(130)

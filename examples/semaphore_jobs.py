"""Several worker processes share a GPU pool; the parent prints who holds what.

    python examples/semaphore_jobs.py                 # embedded control plane
    python examples/semaphore_jobs.py --kubeconfig ~/.kube/config --namespace default

Each worker is a separate Python process (as a pod would be) running the *blocking* API::

    with Semaphore("gpu-pool").hold(weight=2) as permit:
        train(fencing_token=permit.token)

The parent watches the Semaphore object and prints its holders and queue on every change,
straight from the server's state.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import anyio

from konductor_sdk import Client, Identity, NotFoundError, Semaphore, SemaphoreStatus

POOL = "gpu-pool"


def worker(kubeconfig: str, namespace: str, name: str, jobs: int) -> None:
    """One worker process: a few jobs, each holding 1 or 2 GPUs for a moment."""
    from konductor_sdk import sync

    # A client made here is ours to close: ``with`` does it (or ``client.close()``).
    with sync.Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(name)) as c:
        pool = sync.Semaphore(POOL, client=c, ttl=10)
        rng = random.Random(name)
        for job in range(jobs):
            gpus = rng.choice((1, 2))
            with pool.hold(weight=gpus, priority=rng.choice((0, 1))) as permit:
                print(f"  {name}: job {job} on {gpus} GPU(s), token {permit.token}", flush=True)
                time.sleep(rng.uniform(0.2, 0.6))  # the "training"


def describe(status: SemaphoreStatus) -> str:
    held = ", ".join(f"{h.holder}x{h.weight}#{h.token}" for h in status.holders)
    queued = ", ".join(f"{w.holder}x{w.weight}" for w in status.waiters)  # in service order
    return (
        f"[{status.in_use}/{status.limit} {status.phase:5}] "
        f"holding: {held or '-'} | queue: {queued or '-'}"
    )


async def run(kubeconfig: Path, namespace: str, workers: int, permits: int, jobs: int) -> None:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity("parent")
    ) as client:
        sem = Semaphore(POOL, permits=permits, client=client)
        status = await sem.status() if await _exists(sem) else await sem.create()
        print(f"{POOL}: {status.limit} GPUs, {workers} workers x {jobs} jobs", flush=True)
        peak = 0

        async def show_every_change() -> None:
            nonlocal peak
            async for now in sem.changes():  # the shared watch: no polling
                peak = max(peak, now.in_use)
                print(describe(now), flush=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(show_every_change)
            cmd = [sys.executable, __file__, "--worker", str(kubeconfig), namespace]
            procs = [
                await anyio.open_process([*cmd, f"worker-{i}", str(jobs)], stdout=None, stderr=None)
                for i in range(workers)
            ]
            codes = [await p.wait() for p in procs]
            tg.cancel_scope.cancel()
        print(f"done: exit codes {codes}, at most {peak} of {permits} GPUs were ever in use")


async def _exists(sem: Semaphore) -> bool:
    try:
        await sem.status()
    except NotFoundError:
        return False
    return True


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kubeconfig, namespace, name, jobs = sys.argv[2:6]
        worker(kubeconfig, namespace, name, int(jobs))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, help="default: start a local control plane")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--permits", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    if args.kubeconfig is not None:
        anyio.run(run, args.kubeconfig, args.namespace, args.workers, args.permits, args.jobs)
        return
    from konductor_sdk.testing import LocalControlPlane

    with LocalControlPlane() as cp:
        cp.create_namespace("jobs")
        anyio.run(run, cp.kubeconfig_path, "jobs", args.workers, args.permits, args.jobs)


if __name__ == "__main__":
    main()

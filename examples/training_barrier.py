"""A PyTorch-style training job whose ranks meet at a barrier between stages.

Every rank runs ``load -> train -> export``; nobody starts training before every rank has
loaded its shard, and nobody exports before every rank has trained. The barriers are
Kubernetes objects, so the ranks may be pods on different nodes; here they are local
processes unless the script is launched by ``torchrun`` (which sets ``RANK``/``WORLD_SIZE``)::

    python examples/training_barrier.py --world-size 4            # 4 local processes
    torchrun --nproc-per-node 4 examples/training_barrier.py      # or let torchrun spawn

    kubectl get barriers -l sync.konductor.io/pipeline=train-job  # watch it happen

torch is optional: with it, each rank fits a tiny linear model with torch; without it, the
same arithmetic in plain Python. The blocking API is used on purpose: training scripts are
synchronous; the arrival is renewed in the background while a rank computes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
from typing import Any

STAGES = ("load", "train", "export")


def fit(shard: list[tuple[float, float]], steps: int = 200) -> tuple[float, float]:
    """Least squares ``y = w*x + b`` by gradient descent, with torch if available."""
    try:
        import torch
    except ImportError:
        w = b = 0.0
        for _ in range(steps):
            gw = sum(2 * (w * x + b - y) * x for x, y in shard) / len(shard)
            gb = sum(2 * (w * x + b - y) for x, y in shard) / len(shard)
            w, b = w - 0.1 * gw, b - 0.1 * gb
        return w, b
    xs = torch.tensor([x for x, _ in shard])
    ys = torch.tensor([y for _, y in shard])
    w = torch.zeros((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([w, b], lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((w * xs + b - ys) ** 2).mean()
        loss.backward()
        optimizer.step()
    return float(w), float(b)


def run_rank(rank: int, world_size: int, options: dict[str, Any]) -> None:
    from konductor_sdk.sync import Client, Stages

    # A blocking client: ``with`` closes it (its connections live in the blocking side's loop).
    with Client(kubeconfig=options["kubeconfig"], namespace=options["namespace"]) as client:
        stages = Stages(
            options["name"],
            STAGES,
            parties=world_size,
            client=client,
            party=f"rank-{rank}",  # stable names: a missing rank is named in errors
            timeout=options["timeout"],
            ttl=30,
        )
        rng = random.Random(rank)
        shard = [(x, 3.0 * x + 1.0 + rng.gauss(0, 0.01)) for x in (rng.random() for _ in range(64))]
        time.sleep(rng.uniform(0, 0.5))  # ranks load at different speeds
        stages.wait("load")

        w, b = fit(shard)
        stages.wait("train")

        print(f"rank {rank}/{world_size}: w={w:.2f} b={b:.2f}", flush=True)
        stages.wait("export")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 2)))
    parser.add_argument("--name", default="train-job", help="pipeline name (object prefix)")
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per stage")
    args = parser.parse_args()
    options = vars(args)
    if "RANK" in os.environ:  # launched by torchrun: this process is one rank
        run_rank(int(os.environ["RANK"]), args.world_size, options)
        return
    ctx = multiprocessing.get_context("spawn")
    ranks = [
        ctx.Process(target=run_rank, args=(rank, args.world_size, options))
        for rank in range(args.world_size)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join()
    failed = [rank for rank, process in enumerate(ranks) if process.exitcode != 0]
    if failed:
        raise SystemExit(f"ranks {failed} failed")
    print(f"all {args.world_size} ranks passed {' -> '.join(STAGES)}")


if __name__ == "__main__":
    main()

"""Start-up time: how long ``koncli --help`` and ``import konductor_sdk`` take, whole process.

    python benchmarks/startup.py            # 5 runs each (after a warm-up), medians
    python benchmarks/startup.py -n 21

Each command is started as a fresh process (start-up is what is measured: interpreter,
imports, work, exit) and timed from outside with a monotonic clock; the median of the runs
is the figure (min and max show how noisy the machine was). ``python -c pass`` is the
floor no Python program can go below. Prints figures, asserts nothing; also a scenario of
``python -m benchmarks`` (``--scenario startup``). Targets from issue 14: ``koncli --help``
<= 150 ms, ``import konductor_sdk`` <= 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PYTHON = sys.executable
KONCLI = str(Path(PYTHON).with_name("koncli"))

# name -> argv
COMMANDS: dict[str, list[str]] = {
    "python -c pass (floor)": [PYTHON, "-c", "pass"],
    "import konductor_sdk": [PYTHON, "-c", "import konductor_sdk"],
    "from konductor_sdk import Semaphore": [PYTHON, "-c", "from konductor_sdk import Semaphore"],
    "koncli --help": [KONCLI, "--help"],
    "koncli semaphore --help": [KONCLI, "semaphore", "--help"],
}


def time_runs(argv: Sequence[str], runs: int, warmup: int = 1) -> list[float]:
    """Wall milliseconds of ``runs`` fresh processes of ``argv`` (after ``warmup`` more)."""
    samples = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            samples.append(elapsed)
    return samples


def measure(runs: int) -> dict[str, list[float]]:
    return {name: time_runs(argv, runs) for name, argv in COMMANDS.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=5, help="timed runs per command")
    args = parser.parse_args(argv)
    print(f"{'command':<38} {'median ms':>9} {'min':>7} {'max':>7}   ({args.runs} runs)")
    for name, samples in measure(args.runs).items():
        print(
            f"{name:<38} {statistics.median(samples):>9.0f} "
            f"{min(samples):>7.0f} {max(samples):>7.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m benchmarks``: run the benchmark suite on a fresh local control plane.

Writes ``<out>/results.json`` and ``<out>/results.md`` (default ``bench-results/``);
progress goes to stderr, the markdown table to stdout. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import anyio

from . import _harness, scenarios


def parse_args(argv: list[str], names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Konductor benchmarks against a local kube-apiserver + etcd.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and windows (about 3 minutes)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repeats per scenario (default: 1 with --quick; else 5, 3 for the slow ones)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile this process during each scenario (<out>/profile-<name>.pstats)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.repeat is not None and not 1 <= args.repeat <= 50:
        parser.error(f"--repeat must be between 1 and 50, got {args.repeat}")
    return args


def main(argv: list[str] | None = None) -> int:
    registry = scenarios.load()
    args = parse_args(sys.argv[1:] if argv is None else argv, list(registry))
    if args.list:
        for scenario in registry.values():
            print(f"{scenario.number:>3}  {scenario.name:<16} {scenario.title}")
        return 0
    selected = [registry[n] for n in registry if not args.scenario or n in args.scenario]
    skip = {}
    if args.quick and not args.scenario:
        skip = {
            s.name: f"not part of --quick (run it with --quick --scenario {s.name})"
            for s in selected
            if not s.in_quick_suite
        }
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    report, json_path, md_path = anyio.run(
        lambda: _harness.run(
            selected,
            repeat=args.repeat,
            quick=args.quick,
            out_dir=args.out,
            profile=args.profile,
            command=command.strip(),
            skip=skip,
        ),
        backend="asyncio",
    )
    sys.stdout.write(md_path.read_text())
    print(f"\nwrote {json_path} and {md_path}", file=sys.stderr)
    failed = [n for n, r in report["scenarios"].items() if r["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

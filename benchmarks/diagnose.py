"""``python -m benchmarks.diagnose {contention,barrier}``: profiling for docs/performance.md.

``contention`` (scenario 2): for each number of clients, the same three phases on one
fresh Semaphore object — blind PATCHes, naive compare-and-swap, acquire+release with zero
hold — with every client instrumented (:mod:`benchmarks._instrument`: request latency by
verb, CAS back-off) and the apiserver's own counters read around each phase (how many
etcd updates it attempted per write that succeeded).

``barrier`` (scenario 3): for each number of parties and arrival TTL, parties spread over
a few clients all arrive at once (bounded in time), then the last one arrives while this
process is profiled with cProfile: how long the arrivals took, whether any party lost its
arrival, and where the release fan-out spends its CPU.

Each prints one markdown table (and writes JSON next to the benchmark results).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from konductor_sdk import BarrierFailed
from konductor_sdk.testing import LocalControlPlane

from ._harness import Context, counter_delta, request_counts
from ._load import SEMAPHORE_PERMITS, LoadGroup, PhaseResult

COLUMNS = (
    ("clients", "clients"),
    ("blind_per_s", "blind PATCH/s"),
    ("blind_etcd_updates_per_write", "etcd updates per blind PATCH"),
    ("cas_per_s", "naive CAS writes/s"),
    ("cas_409_per_write", "409s per CAS write"),
    ("grants_per_s", "grants/s"),
    ("grant_409", "409s per grant"),
    ("grant_writes_ok", "writes per grant"),
    ("grant_get_ms", "GET ms (mean)"),
    ("grant_put_ms", "status PUT ms (mean)"),
    ("grant_backoff_share", "share of client time in CAS back-off"),
    ("grant_cpu_ours", "CPU busy, ours %"),
    ("grant_cpu_machine", "CPU busy, machine %"),
)


def _mean_ms(instrument: dict[str, float], verb: str) -> float:
    n = instrument.get(f"{verb}.n", 0.0)
    return 1000 * instrument.get(f"{verb}.s", 0.0) / n if n else float("nan")


async def _row(
    plane: LocalControlPlane, clients: int, processes: bool, seconds: float, log_dir: Path
) -> dict[str, float]:
    from konductor_sdk.semaphore import Semaphore

    namespace = f"diag-{clients}-{secrets.token_hex(3)}"
    await anyio.to_thread.run_sync(plane.handle.create_namespace, namespace)
    ctx = Context(
        plane.handle,
        namespace,
        quick=False,
        log_dir=log_dir,
        name=f"diagnose-{clients}",
        server_pids=plane.pids,
    )
    try:
        creator = await ctx.client("diag-creator")
        await Semaphore("diag", client=creator).create(permits=SEMAPHORE_PERMITS)
        group = LoadGroup(clients, processes=processes, instrument=True)
        await group.start(ctx, label=f"diag{clients}", watch_semaphores=True)
        row: dict[str, float] = {"clients": clients}
        before = await ctx.server_counters()
        blind = await group.phase("blind", "semaphore", "diag", warmup=0.5, seconds=seconds)
        server = counter_delta(before, await ctx.server_counters())
        row["blind_per_s"] = blind.per_second
        # Includes warm-up and tail writes on both sides of the ratio's numerator and
        # denominator: attempts per write that the clients saw succeed, whole phase.
        ok = server.get("requests.200", 0.0)
        row["blind_etcd_updates_per_write"] = server.get("etcd.update", 0.0) / max(ok, 1.0)
        cas = await group.phase("cas", "semaphore", "diag", warmup=0.5, seconds=seconds)
        row["cas_per_s"] = cas.per_second
        row["cas_409_per_write"] = cas.cas_conflicts / max(cas.done, 1)
        grants = await group.phase("semaphore", "semaphore", "diag", warmup=2.0, seconds=seconds)
        row |= _grant_columns(grants, clients)
        return row
    finally:
        await ctx.aclose()


def _grant_columns(grants: PhaseResult, clients: int) -> dict[str, float]:
    per = max(grants.done, 1)
    counts = request_counts(Counter(), grants.stats)
    backoff = grants.instrument.get("cas_backoff.s", 0.0)
    return {
        "grants_per_s": grants.per_second,
        "grant_409": counts["conflicts"] / per,
        "grant_writes_ok": counts["writes_ok"] / per,
        "grant_get_ms": _mean_ms(grants.instrument, "GET"),
        "grant_put_ms": _mean_ms(grants.instrument, "PUT status"),
        "grant_backoff_share": backoff / (clients * grants.seconds),
        "grant_cpu_ours": grants.cpu_utilisation * 100,
        "grant_cpu_machine": grants.machine_busy,
    }


def _cell(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


async def _main(args: argparse.Namespace) -> None:
    rows = []
    async with LocalControlPlane() as plane:
        for clients in args.clients:
            print(f"{clients} clients...", file=sys.stderr)
            rows.append(
                await _row(plane, clients, args.layout == "processes", args.seconds, args.out)
            )
    _print_table(COLUMNS, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"layout": args.layout, "seconds": args.seconds, "rows": rows}
    (args.out / f"diagnose-{args.layout}.json").write_text(json.dumps(report, indent=2))


BARRIER_COLUMNS = (
    ("parties", "parties"),
    ("ttl", "arrival ttl s"),
    ("arrived", "arrived"),
    ("arrivals_s", "arrivals took s"),
    ("lost", "parties that lost their arrival"),
    ("conflicts_per_arrival", "409s per arrival"),
    ("put_ms", "status PUT ms (mean)"),
    ("release_ms", "last arrival → last release ms"),
    ("top", "release CPU: top functions (cumulative share)"),
)


async def _barrier_row(
    plane: LocalControlPlane, parties: int, ttl: int, clients_n: int, bound: float
) -> dict[str, Any]:
    from konductor_sdk import Client, Identity
    from konductor_sdk._kernel.objects import BARRIER
    from konductor_sdk.barrier import Barrier

    from . import _instrument

    _instrument.install()
    namespace = f"diag-barrier-{parties}-{ttl}-{secrets.token_hex(2)}"
    await anyio.to_thread.run_sync(plane.handle.create_namespace, namespace)
    clients = [
        Client(kubeconfig=plane.kubeconfig_path, namespace=namespace, identity=Identity(f"c{i}"))
        for i in range(clients_n + 1)
    ]
    row: dict[str, Any] = {"parties": parties, "ttl": ttl}
    try:
        for client in clients:
            await client.connect()
            await client.watch(BARRIER, namespace)
        mine = [
            [
                Barrier("diag", expected=parties, client=c, party=f"p{i}-{j}", ttl=ttl)
                for j in range((parties - 1) // clients_n + (i < (parties - 1) % clients_n))
            ]
            for i, c in enumerate(clients[:-1])
        ]
        before = _instrument.snapshot()
        stats_before = [c.store.stats.copy() for c in clients]
        started = time.monotonic()
        arrived: list[float] = []
        lost: list[str] = []
        releases: list[float] = []
        all_done = anyio.Event()

        async def arrive(barrier: Any) -> None:
            await barrier.arrive()
            arrived.append(time.monotonic())

        async def wait(barrier: Any) -> None:
            try:
                await barrier.wait_open()
            except BarrierFailed as exc:
                lost.append(str(exc))
            else:
                releases.append(time.monotonic())
            if len(releases) + len(lost) == parties - 1:
                all_done.set()

        async with anyio.create_task_group() as tg:
            with anyio.move_on_after(bound):
                async with anyio.create_task_group() as arriving:
                    for barrier in (b for barriers in mine for b in barriers):
                        arriving.start_soon(arrive, barrier)
            row["arrived"] = len(arrived)
            row["arrivals_s"] = (max(arrived) if arrived else started) - started
            total: Counter[str] = Counter()
            for client, stats in zip(clients, stats_before, strict=True):
                total.update(client.store.stats)
                total.subtract(stats)
            counts = request_counts(Counter(), total)
            row["conflicts_per_arrival"] = counts["conflicts"] / max(len(arrived), 1)
            row["put_ms"] = _mean_ms(
                _instrument.delta(before, _instrument.snapshot()), "PUT status"
            )
            complete = len(arrived) == parties - 1
            for barrier in (b for barriers in mine for b in barriers):
                if barrier.statistics().generation is not None:
                    tg.start_soon(wait, barrier)
            await anyio.sleep(1.0)  # every waiter is parked on the watch
            row["release_ms"] = float("nan")
            row["top"] = "(arrivals incomplete)"
            if complete and not lost:
                profiler = cProfile.Profile()
                last = Barrier("diag", expected=parties, client=clients[-1], party="last", ttl=ttl)
                profiler.enable()
                try:
                    t0 = time.monotonic()
                    with anyio.move_on_after(60) as waiting:
                        await last.wait()
                        await all_done.wait()
                finally:
                    profiler.disable()
                if waiting.cancelled_caught:
                    row["top"] = f"(did not open within 60 s; {len(lost)} lost their arrival)"
                else:
                    row["release_ms"] = (max(releases) - t0) * 1000 if releases else float("nan")
                    row["top"] = _top_functions(profiler)
            tg.cancel_scope.cancel()
        row["lost"] = len(lost)
        return row
    finally:
        for client in clients:
            await client.aclose()


def _top_functions(profiler: cProfile.Profile, count: int = 5) -> str:
    stats = pstats.Stats(profiler)
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    own = {
        f"{Path(file).stem}.{name}": cumulative
        for (file, _, name), (_, _, _, cumulative, _) in stats.stats.items()  # type: ignore[attr-defined]
        if "konductor_sdk" in file or "copy.py" in file or "json" in file
    }
    best = sorted(own.items(), key=lambda kv: -kv[1])[:count]
    return ", ".join(f"{name} {100 * value / total:.0f}%" for name, value in best)


async def _barrier_main(args: argparse.Namespace) -> None:
    rows = []
    async with LocalControlPlane() as plane:
        for ttl in args.ttl:
            for parties in args.parties:
                print(f"{parties} parties, ttl {ttl}s...", file=sys.stderr)
                # Bounded as a whole too: arrivals, the release and every clean-up.
                with anyio.move_on_after(args.bound + 120) as scope:
                    row = await _barrier_row(plane, parties, ttl, args.clients, args.bound)
                if scope.cancelled_caught:
                    row = {"parties": parties, "ttl": ttl, "top": "(timed out)"}
                rows.append(row)
    _print_table(BARRIER_COLUMNS, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diagnose-barrier.json").write_text(json.dumps({"rows": rows}, indent=2))


def _print_table(columns: tuple[tuple[str, str], ...], rows: list[dict[str, Any]]) -> None:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        values = [r.get(key, float("nan")) for key, _ in columns]
        cells = [v if isinstance(v, str) else _cell(v) for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnose", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    commands = parser.add_subparsers(dest="command", required=True)
    contention = commands.add_parser("contention", help="scenario 2 by number of clients")
    contention.add_argument(
        "--clients", type=_ints, default=[1, 2, 8, 32], help="comma-separated (1,2,8,32)"
    )
    contention.add_argument("--layout", choices=("tasks", "processes"), default="processes")
    contention.add_argument("--seconds", type=float, default=5.0, help="window per phase")
    barrier = commands.add_parser("barrier", help="scenario 3 by parties and arrival TTL")
    barrier.add_argument("--parties", type=_ints, default=[64, 128, 256])
    barrier.add_argument("--ttl", type=_ints, default=[30, 300], help="arrival TTLs, seconds")
    barrier.add_argument("--clients", type=int, default=4, help="clients sharing the parties")
    barrier.add_argument("--bound", type=float, default=60.0, help="seconds for the arrivals")
    args = parser.parse_args()
    if args.command == "contention":
        if any(not 1 <= c <= 64 for c in args.clients):
            parser.error("--clients must be between 1 and 64 each")
        if not 1.0 <= args.seconds <= 60.0:
            parser.error("--seconds must be between 1 and 60")
        anyio.run(_main, args, backend="asyncio")
        return
    if any(not 2 <= p <= 1024 for p in args.parties) or not 1 <= args.clients <= 16:
        parser.error("--parties must be in 2..1024 and --clients in 1..16")
    if not 5.0 <= args.bound <= 300.0:
        parser.error("--bound must be between 5 and 300 seconds")
    anyio.run(_barrier_main, args, backend="asyncio")


if __name__ == "__main__":
    main()

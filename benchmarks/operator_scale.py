"""Operator at scale: N semaphores with M holders each that stop renewing; measure the
operator's RSS, its CPU while idle, and the expiry lag (TTL end to removal).

::

    python benchmarks/operator_scale.py                         # 1,000 x 10, ~3 minutes
    python benchmarks/operator_scale.py --primitives 10000 --holders 10 --ttl 240

It starts its own local control plane (or uses ``--kubeconfig``), runs
``python -m konductor_operator`` as a separate process on one namespace, then:

1. **load**: creates the semaphores and writes M holder entries into each (one status
   write per object), recording when each write was sent and acknowledged;
2. **idle with holders**: once the operator's Event backlog has drained, nothing changes
   for ``--idle`` seconds (before the first TTL runs out): operator CPU share and RSS;
3. **expiry**: the entries never renew; a watch in this process records when each one is
   removed. Lag = removal seen - (commit + ttlSeconds), bounded by using the send time
   (upper bound) and the acknowledgement (lower bound) for the commit. It includes the
   operator's watch latency, its queueing and the CAS write, i.e. what a waiter sees;
4. **idle after expiry**: N empty primitives, nothing changing: CPU share and RSS.

Results go to stdout and ``--out`` (JSON). Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.clock import SYSTEM_CLOCK, rfc3339
from konductor_sdk._kernel.objects import NAMESPACE, SEMAPHORE, KObject
from konductor_sdk._machines.rules import registered
from konductor_sdk.testing import LocalControlPlane
from konductor_sdk.testing._process import free_port

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith(name):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Recorder:
    """Watch listener: when each tracked entry disappears (this process's clock)."""

    def __init__(self) -> None:
        self.acked: dict[tuple[str, str], float] = {}  # (object, key) -> write ack time
        self.sent: dict[tuple[str, str], float] = {}  # (object, key) -> write send time
        self.removed: dict[tuple[str, str], float] = {}
        self._pending: dict[str, set[str]] = {}  # object -> keys not yet removed
        self.loaded = False
        self.all_removed = anyio.Event()

    def ack(self, name: str, keys: list[str], sent: float, acked: float) -> None:
        for key in keys:
            self.sent[(name, key)] = sent
            self.acked[(name, key)] = acked
        self._pending.setdefault(name, set()).update(keys)

    def listener(self, etype: str, obj: KObject) -> None:
        pending = self._pending.get(obj.name)
        if not pending:
            return
        now = time.monotonic()
        holders = obj.status.get("holders") or {}
        for key in [k for k in pending if etype == "DELETED" or k not in holders]:
            pending.discard(key)
            self.removed[(obj.name, key)] = now
        if self.loaded and len(self.removed) == len(self.acked):
            self.all_removed.set()


def summary(lags: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(percentile(lags, 0.50), 3),
        "p90": round(percentile(lags, 0.90), 3),
        "p99": round(percentile(lags, 0.99), 3),
        "max": round(max(lags), 3) if lags else None,
        "min": round(min(lags), 3) if lags else None,
        "mean": round(statistics.fmean(lags), 3) if lags else None,
    }


async def wait_events_drained(port: int, *, until: float) -> None:
    """Until the operator's Event counter stood still for 3 s (or ``until``)."""
    last, still = scrape(port, "konductor_operator_events_total"), time.monotonic()
    while time.monotonic() - still < 3 and time.monotonic() < until:
        await anyio.sleep(1)
        now = scrape(port, "konductor_operator_events_total")
        if now != last:
            last, still = now, time.monotonic()


async def idle_window(pid: int, seconds: float) -> dict[str, float]:
    """The operator's CPU share and RSS over ``seconds`` during which nothing changes."""
    cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
    await anyio.sleep(seconds)
    cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
    return {
        "seconds": round(t1 - t0, 1),
        "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
        "rss_mib": round(proc_rss_mib(pid), 1),
    }


async def load(
    client: Client, ns: str, n: int, m: int, ttl: int, concurrency: int, rec: Recorder
) -> float:
    normalize = registered()["Semaphore"].normalize
    limiter = anyio.CapacityLimiter(concurrency)
    started = time.monotonic()

    async def one(i: int) -> None:
        name = f"sem-{i:05d}"
        async with limiter:
            await client.store.create(
                SEMAPHORE, ns, {"metadata": {"name": name}, "spec": {"permits": m}}
            )
            now = rfc3339(SYSTEM_CLOCK.now())
            holders = {
                f"holder-{i}-{j}#{secrets.token_hex(2)}": {
                    "holder": f"bench-{i}-{j}",
                    "ttlSeconds": ttl,
                    "renewCount": 0,
                    "acquiredAt": now,
                    "renewedAt": now,
                    "token": j + 1,
                    "weight": 1,
                    "priority": 0,
                    "preemptible": False,
                }
                for j in range(m)
            }

            def fill(obj: KObject) -> dict[str, Any]:
                status = {"holders": holders, "waiters": {}, "fencingToken": m}
                return normalize(obj.spec, status)

            sent = time.monotonic()
            await update_status(client, SEMAPHORE, ns, name, fill)
            rec.ack(name, list(holders), sent, time.monotonic())

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return time.monotonic() - started


async def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }
    plane = None
    if args.kubeconfig is None:
        plane = LocalControlPlane()
        await plane.astart()
        kubeconfig = plane.kubeconfig_path
    else:
        kubeconfig = args.kubeconfig
    ns = f"scale-{secrets.token_hex(3)}"
    port = free_port()
    log = args.out.with_suffix(".operator.log")
    op = None
    try:
        async with Client(kubeconfig=kubeconfig, namespace=ns, identity=Identity("bench")) as c:
            await c.store.create(NAMESPACE, None, {"metadata": {"name": ns}})
            with log.open("wb") as out:
                op = await anyio.open_process(
                    [
                        sys.executable,
                        "-m",
                        "konductor_operator",
                        "--kubeconfig",
                        str(kubeconfig),
                        "--namespace",
                        ns,
                        "--metrics-host",
                        "127.0.0.1",
                        "--metrics-port",
                        str(port),
                        "--no-leader-elect",
                        "--workers",
                        str(args.workers),
                        "--log-level",
                        "WARNING",
                        "--event-rate",
                        str(args.event_rate),
                        "--event-burst",
                        str(args.event_burst),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            pid = op.pid
            while scrape(port, "konductor_operator_leader") != 1.0:
                if op.returncode is not None:
                    raise RuntimeError(f"operator exited; see {log}")
                await anyio.sleep(0.2)
            result["rss_mib_empty"] = proc_rss_mib(pid)
            rec = Recorder()
            watch = await c.watch(SEMAPHORE, ns)
            watch.add_listener(rec.listener)

            print(f"loading {args.primitives} x {args.holders} (ttl {args.ttl}s)...", flush=True)
            seconds = await load(
                c, ns, args.primitives, args.holders, args.ttl, args.concurrency, rec
            )
            result["load_seconds"] = round(seconds, 1)
            result["entries"] = len(rec.acked)
            print(f"loaded {len(rec.acked)} entries in {seconds:.1f}s", flush=True)
            rec.loaded = True
            result["rss_mib_loaded"] = round(proc_rss_mib(pid), 1)
            first_expiry = min(rec.sent.values()) + args.ttl
            # The load made the operator write Events (paced by --event-rate); an idle
            # window needs that backlog drained and must end before the first TTL does.
            await wait_events_drained(port, until=first_expiry - args.idle - 2)
            if time.monotonic() + args.idle + 2 < first_expiry:
                result["idle_with_holders"] = await idle_window(pid, args.idle)
            else:
                print("no idle window before expiry (raise --ttl or --event-rate)", flush=True)
            print(f"idle with holders: {result.get('idle_with_holders')}", flush=True)

            cpu_before = proc_cpu_seconds(pid)
            last_ttl_end = max(rec.acked.values()) + args.ttl
            deadline = last_ttl_end + args.max_lag
            if len(rec.removed) == len(rec.acked):
                rec.all_removed.set()
            with anyio.move_on_after(deadline - time.monotonic()):
                await rec.all_removed.wait()
            result["expiry_cpu_seconds"] = round(proc_cpu_seconds(pid) - cpu_before, 1)
            result["removed"] = len(rec.removed)
            result["not_removed_within_max_lag"] = len(rec.acked) - len(rec.removed)
            # The TTL ends ttlSeconds after the write committed, which is somewhere between
            # sending it and its acknowledgement: two bounds on the lag.
            result["expiry_lag_seconds_vs_ack (lower bound)"] = summary(
                [rec.removed[k] - (rec.acked[k] + args.ttl) for k in rec.removed]
            )
            result["expiry_lag_seconds_vs_send (upper bound)"] = summary(
                [rec.removed[k] - (rec.sent[k] + args.ttl) for k in rec.removed]
            )
            result["rss_mib_peak"] = round(proc_hwm_mib(pid), 1)
            await wait_events_drained(port, until=time.monotonic() + args.drain)
            result["idle_after_expiry"] = await idle_window(pid, args.idle)
            print(f"idle after expiry: {result['idle_after_expiry']}", flush=True)
            result["operator_reaped_total"] = scrape(port, "konductor_operator_reaped_total")
            result["operator_status_writes"] = scrape(
                port, "konductor_operator_status_writes_total"
            )
            result["operator_events"] = scrape(port, "konductor_operator_events_total")
    finally:
        if op is not None and op.returncode is None:
            op.send_signal(signal.SIGTERM)
            with anyio.move_on_after(30):
                await op.wait()
        if plane is not None:
            await plane.astop()
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--primitives", type=int, default=1000, help="semaphores (N)")
    parser.add_argument("--holders", type=int, default=10, help="holders per semaphore (M)")
    parser.add_argument("--ttl", type=int, default=90, help="entry ttlSeconds")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    parser.add_argument("--max-lag", type=float, default=120.0, help="give up after this")
    parser.add_argument("--workers", type=int, default=8, help="operator --workers")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent loads")
    parser.add_argument(
        "--event-rate", type=float, default=20.0, help="operator --event-rate (its default)"
    )
    parser.add_argument("--event-burst", type=int, default=50, help="operator --event-burst")
    parser.add_argument(
        "--drain", type=float, default=120.0, help="longest wait for the Event backlog"
    )
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("operator-scale.json"))
    args = parser.parse_args(argv)
    if args.ttl < 10:
        parser.error("--ttl must be >= 10 (the load must finish before entries expire)")
    return args


if __name__ == "__main__":
    arguments = parse()
    report = anyio.run(main, arguments, backend="asyncio")
    text = json.dumps(report, indent=2)
    arguments.out.write_text(text + "\n")
    print(text)

"""Operator at scale on the v2 object model: its RSS and its expiry lag with N participants.

::

    python -m benchmarks.operator_scale                      # N = 1,000 (about 2 minutes)
    python -m benchmarks.operator_scale -n 1000 -n 10000 -n 100000

For each N it starts a local control plane (or uses ``--kubeconfig``) and runs
``python -m konductor_operator`` as a separate process on a fresh namespace. A participant
is one ``Session`` nobody renews (a process that died), plus what names it: a grant in a
Semaphore's ``status.holders`` (the first ``--holders`` of every ``--per-object``
participants of a Semaphore) or a queued ``Claim`` on it (the rest). So N = 100,000 with
100 per object is 1,000 Semaphores, 50,000 grants, 50,000 claims and 100,000 sessions.

1. **load**: every participant that stays (a day's TTL, as live participants would) is
   created with ``--concurrency`` requests in flight: sessions first, then the Semaphores
   with their grants, then the claims;
2. **loaded**: once the operator's CPU has settled (it has listed and watched everything),
   its RSS;
3. **expiry**: ``--expiring`` participants, picked at random, join at ``--expire-rate`` per
   second and die at once: a session with ``--ttl`` seconds that is never renewed, then
   its grant (a JSON patch, as the SDK writes it) or its claim. A session's expiry moment
   is the acknowledgement of its creation + ``ttlSeconds``, on this machine's monotonic
   clock, which the operator shares; a watch in this process records when the session,
   its claim and its grant disappear. Lag = the last of those removals - that moment; the
   session's own deletion is shown apart. It includes the operator's watch latency,
   queueing and writes: what a waiter of the freed permit sees. They join after the load
   so that their clocks start on an operator that keeps up, as they would in a cluster
   that did not just get 100,000 objects in a few minutes (run at N = 10,000 with their
   TTLs planned during the load, the lag was mostly the operator's watch catching up).

4. **restart**: a second operator process is started on what is left and lists it all at
   once (what a new leader does): its RSS peak once it has settled.

The peak RSS is the operator's high-water mark over the whole run. Prints a table; the
figures also go to ``--out`` (JSON). Issue 12's targets at 100,000 participants: RSS <=
250 MB, expiry lag p99 <= 1 s. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from konductor_operator._pods import SlimStore
from konductor_sdk import Client, Identity
from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.clock import SYSTEM_CLOCK, rfc3339
from konductor_sdk._kernel.errors import ConflictError, InvalidObjectError
from konductor_sdk._kernel.objects import CLAIM, NAMESPACE, SEMAPHORE, SESSION, KObject
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk._machines.rules import registered
from konductor_sdk._machines.semaphore_plan import grant_patch
from konductor_sdk.testing import LocalControlPlane
from konductor_sdk.testing._process import free_port

from ._harness import cpu_seconds
from ._report import percentile

LIVE_TTL = 86_400


def proc_status_mib(pid: int, field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return math.nan


def scrape(port: int, name: str) -> float | None:
    """The sum of every sample of ``name`` on the operator's ``/metrics``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def _slim(obj: KObject) -> KObject:
    # This process watches 100,000 sessions and claims too: keep only what it reads, and
    # the resourceVersion its watch resumes from. Without it every end of a watch stream
    # (each 5 minutes) re-listed 100,000 objects, which hid removals for ~10 s: the
    # expiry-lag tails of earlier runs, whenever that fell while participants died.
    md = obj.metadata
    kept = ("name", "namespace", "resourceVersion")
    return KObject({"metadata": {k: md[k] for k in kept if k in md}})


class Participants:
    """Who was created when, and when each piece of it was seen gone (watch listeners)."""

    def __init__(self, n: int, per_object: int, holders: int) -> None:
        self.n = n
        self.per_object = per_object
        self.holders = holders
        self.expiring: set[int] = set()
        self.acked: dict[int, float] = {}  # participant -> its session's creation ack
        self.ttl: dict[int, int] = {}
        self.session_gone: dict[int, float] = {}
        self.other_gone: dict[int, float] = {}  # its claim or its grant
        self._slots: dict[str, dict[str, int]] = {}  # semaphore -> slot -> participant
        self.done = anyio.Event()

    def object_of(self, i: int) -> tuple[str, int]:
        """``(semaphore, index among its participants)``."""
        return f"sem-{i // self.per_object:05d}", i % self.per_object

    def granted(self, i: int) -> bool:
        return self.object_of(i)[1] < self.holders

    def expect_grants(self, semaphore: str, slots: dict[str, int]) -> None:
        self._slots.setdefault(semaphore, {}).update(slots)

    def _check_done(self) -> None:
        if len(self.session_gone) == len(self.other_gone) == len(self.expiring):
            self.done.set()

    def on_session(self, etype: str, obj: KObject) -> None:
        if etype == "DELETED" and obj.name.startswith("p-"):
            self.session_gone.setdefault(int(obj.name[2:]), time.monotonic())
            self._check_done()

    def on_claim(self, etype: str, obj: KObject) -> None:
        if etype == "DELETED" and obj.name.startswith("c-"):
            self.other_gone.setdefault(int(obj.name[2:]), time.monotonic())
            self._check_done()

    def on_semaphore(self, etype: str, obj: KObject) -> None:
        pending = self._slots.get(obj.name)
        if not pending:
            return
        now = time.monotonic()
        holders = {} if etype == "DELETED" else (obj.status.get("holders") or {})
        for slot in [s for s in pending if s not in holders]:
            self.other_gone.setdefault(pending.pop(slot), now)
        self._check_done()


def _session(i: int, ttl: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{i:06d}"},
        "spec": {"holder": f"bench-{i}", "ttlSeconds": ttl, "renewCount": 0},
    }


def _claim(p: Participants, i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"c-{i:06d}"},
        "spec": {
            "target": {"kind": "Semaphore", "name": p.object_of(i)[0]},
            "session": f"p-{i:06d}",
            "holder": f"bench-{i}",
        },
    }


def _grant(i: int, creator: str) -> dict[str, Any]:
    return {
        "weight": 1,
        "session": f"p-{i:06d}",
        "creator": creator,
        "holder": f"bench-{i}",
        "grantedAt": rfc3339(SYSTEM_CLOCK.now()),
    }


async def load(
    client: Client, ns: str, p: Participants, *, expiring: int, concurrency: int
) -> dict[str, float]:
    """Create every participant that stays; returns figures of the load. The ``expiring``
    ones are only picked here (their slots stay free) and join in :func:`die`."""
    n = p.n
    creator = await client.whoami()
    objects = math.ceil(n / p.per_object)
    p.expiring = set(random.Random(12).sample(range(n), min(n, expiring)))
    staying = [i for i in range(n) if i not in p.expiring]
    requests = len(staying) + objects * 2 + sum(1 for i in staying if not p.granted(i))
    started = time.monotonic()
    limiter = anyio.CapacityLimiter(concurrency)

    async def session(i: int) -> None:
        async with limiter:
            await client.store.create(SESSION, ns, _session(i, LIVE_TTL))

    async def semaphore(k: int) -> None:
        name = f"sem-{k:05d}"
        members = range(k * p.per_object, min(n, (k + 1) * p.per_object))
        slots = dict(enumerate(i for i in members if p.granted(i)))
        async with limiter:
            await client.store.create(
                SEMAPHORE, ns, {"metadata": {"name": name}, "spec": {"permits": p.holders}}
            )
        live = [(slot, i) for slot, i in slots.items() if i not in p.expiring]
        # The server's rule: the counter grows by exactly one per new grant.
        holders = {
            str(slot): {**_grant(i, creator), "token": token}
            for token, (slot, i) in enumerate(live, start=1)
        }
        normalize = registered()["Semaphore"].normalize

        def fill(obj: KObject) -> dict[str, Any]:
            return normalize(obj.spec, {"holders": holders, "fencingToken": len(holders)})

        p.expect_grants(name, {key: int(e["session"][2:]) for key, e in holders.items()})
        async with limiter:
            await update_status(client, SEMAPHORE, ns, name, fill)

    async def claim(i: int) -> None:
        async with limiter:
            await client.store.create(CLAIM, ns, _claim(p, i))

    async with anyio.create_task_group() as tg:
        for i in staying:
            tg.start_soon(session, i)
    sessions_done = time.monotonic()
    async with anyio.create_task_group() as tg:
        for k in range(objects):
            tg.start_soon(semaphore, k)
        for i in staying:
            if not p.granted(i):
                tg.start_soon(claim, i)
    seconds = time.monotonic() - started
    return {
        "objects": objects,
        "requests": requests,
        "load_seconds": round(seconds, 1),
        "sessions_seconds": round(sessions_done - started, 1),
        "creates_per_second": round(requests / seconds),
    }


async def die(client: Client, ns: str, p: Participants, *, ttl: int, rate: float) -> None:
    """The expiring participants join, ``rate`` a second, each as a session that will not
    be renewed and then its grant or claim (the acknowledged session starts its TTL)."""
    creator = await client.whoami()
    order = sorted(p.expiring)
    random.Random(13).shuffle(order)
    started = time.monotonic()

    async def one(i: int) -> None:
        await client.store.create(SESSION, ns, _session(i, ttl))
        p.acked[i] = time.monotonic()
        p.ttl[i] = ttl
        if not p.granted(i):
            await client.store.create(CLAIM, ns, _claim(p, i))
            return
        name, index = p.object_of(i)
        slot = sum(1 for j in range(i - index, i) if p.granted(j))
        while True:
            obj = await client.store.get(SEMAPHORE, ns, name)
            ops, _ = grant_patch(obj, [(slot, _grant(i, creator))])
            try:
                await client.store.patch(
                    SEMAPHORE, ns, name, ops, patch_type="json", subresource="status"
                )
            except (InvalidObjectError, ConflictError):
                continue  # another grant on the object in between: plan again
            p.expect_grants(name, {str(slot): i})
            return

    async with anyio.create_task_group() as tg:
        for rank, i in enumerate(order):
            await anyio.sleep(max(0.0, started + rank / rate - time.monotonic()))
            tg.start_soon(one, i)


async def leading(op: Process, port: int, log: Path) -> None:
    while scrape(port, "konductor_operator_leader") != 1.0:
        if op.returncode is not None:
            raise RuntimeError(f"operator exited; see {log}")
        await anyio.sleep(0.2)


async def stop(op: Process) -> None:
    if op.returncode is None:
        op.send_signal(signal.SIGTERM)
        with anyio.move_on_after(30):
            await op.wait()


async def settled(pid: int, *, below: float = 0.05, longest: float = 60.0) -> float:
    """Wait until the operator used less than ``below`` of a core over one second."""
    started = time.monotonic()
    while time.monotonic() - started < longest:
        before = cpu_seconds(pid)
        await anyio.sleep(1.0)
        if cpu_seconds(pid) - before < below:
            break
    return time.monotonic() - started


def lag_summary(lags: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": round(percentile(lags, 50), 3),
        "p99": round(percentile(lags, 99), 3),
        "max": round(max(lags), 3) if lags else None,
    }


async def run_one(kubeconfig: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    wall = time.monotonic()
    ns = f"scale-{n}-{secrets.token_hex(3)}"
    port = free_port()
    log = args.out.with_suffix(f".{n}.operator.log")
    result: dict[str, Any] = {
        "participants": n,
        "expire_rate": args.expire_rate,
        "ttl": args.ttl,
    }
    p = Participants(n, args.per_object, args.holders)
    op = None
    try:
        async with Client(kubeconfig=kubeconfig, namespace=ns, identity=Identity("bench")) as c:
            await c.store.create(NAMESPACE, None, {"metadata": {"name": ns}})
            command = [
                sys.executable,
                "-m",
                "konductor_operator",
                *("--kubeconfig", str(kubeconfig), "--namespace", ns),
                *("--metrics-host", "127.0.0.1", "--metrics-port", str(port)),
                "--no-leader-elect",
                *("--workers", str(args.workers), "--log-level", "WARNING"),
            ]
            with log.open("wb") as out:
                op = await anyio.open_process(command, stdout=out, stderr=subprocess.STDOUT)
            pid = op.pid
            await leading(op, port, log)
            result["rss_mib_empty"] = round(proc_status_mib(pid, "VmRSS"), 1)
            watches = []
            for kind, slim, listener in (
                (SESSION, True, p.on_session),
                (CLAIM, True, p.on_claim),
                (SEMAPHORE, False, p.on_semaphore),
            ):
                store = SlimStore(c.store, _slim) if slim else c.store
                watch = KindWatch(store, kind, ns)
                watch.add_listener(listener)
                watches.append(watch)
            async with anyio.create_task_group() as tg:
                for watch in watches:
                    tg.start_soon(watch.run)
                for watch in watches:
                    await watch.wait_synced()
                print(f"N={n:,}: loading...", file=sys.stderr, flush=True)
                result |= await load(c, ns, p, expiring=args.expiring, concurrency=args.concurrency)
                print(
                    f"N={n:,}: loaded in {result['load_seconds']} s "
                    f"({result['creates_per_second']}/s)",
                    file=sys.stderr,
                    flush=True,
                )
                result["settle_seconds"] = round(await settled(pid), 1)
                result["rss_mib_loaded"] = round(proc_status_mib(pid, "VmRSS"), 1)
                print(f"N={n:,}: {len(p.expiring):,} joining to die...", file=sys.stderr)
                await die(c, ns, p, ttl=args.ttl, rate=args.expire_rate)
                result["rss_mib_all"] = round(proc_status_mib(pid, "VmRSS"), 1)
                last = max(p.acked[i] + p.ttl[i] for i in p.expiring)
                with anyio.move_on_after(max(0.0, last - time.monotonic()) + args.max_lag):
                    await p.done.wait()
                tg.cancel_scope.cancel()
            result["rss_mib_peak"] = round(proc_status_mib(pid, "VmHWM"), 1)
            # Lists beyond the first of this process's own watches: one while participants
            # die delays what it sees, and the lag below with it.
            result["measuring_relists"] = sum(w.relists - 1 for w in watches)
            expiry = {i: p.acked[i] + p.ttl[i] for i in p.expiring}
            whole = [
                max(p.session_gone[i], p.other_gone[i]) - expiry[i]
                for i in p.expiring
                if i in p.session_gone and i in p.other_gone
            ]
            result["lag_seconds"] = lag_summary(whole)
            result["session_lag_seconds"] = lag_summary(
                [t - expiry[i] for i, t in p.session_gone.items() if i in expiry]
            )
            result["expiring"] = len(p.expiring)
            result["not_removed_within_max_lag"] = len(p.expiring) - len(whole)
            result["live_removed"] = sum(1 for i in p.session_gone if i not in expiry)
            result["removed_early"] = sum(1 for v in whole if v < -0.5)
            result["operator_cpu_seconds"] = round(cpu_seconds(pid), 1)
            for metric in ("reaped_total", "status_writes_total", "events_total"):
                result[f"operator_{metric}"] = scrape(port, f"konductor_operator_{metric}")
            await stop(op)
            with log.with_suffix(".restart.log").open("wb") as out:
                op = await anyio.open_process(command, stdout=out, stderr=subprocess.STDOUT)
            started = time.monotonic()
            await leading(op, port, log)
            await settled(op.pid)
            result["restart_settle_seconds"] = round(time.monotonic() - started, 1)
            result["restart_rss_mib_peak"] = round(proc_status_mib(op.pid, "VmHWM"), 1)
    finally:
        if op is not None:
            await stop(op)
    result["run_seconds"] = round(time.monotonic() - wall, 1)
    return result


def table(runs: Sequence[dict[str, Any]]) -> str:
    """The figures of every N, one column each."""
    rows = [
        ("participants", lambda r: f"{r['participants']:,}"),
        ("semaphores", lambda r: f"{r['objects']:,}"),
        ("create requests", lambda r: f"{r['requests']:,}"),
        ("load, s (creates/s)", lambda r: f"{r['load_seconds']} ({r['creates_per_second']})"),
        ("operator RSS empty, MiB", lambda r: f"{r['rss_mib_empty']}"),
        ("operator RSS loaded, MiB", lambda r: f"{r['rss_mib_loaded']}"),
        ("  with the expiring ones too", lambda r: f"{r['rss_mib_all']}"),
        ("operator RSS peak, MiB", lambda r: f"{r['rss_mib_peak']}"),
        ("restarted: RSS peak, MiB", lambda r: f"{r['restart_rss_mib_peak']}"),
        ("restarted: listed and settled, s", lambda r: f"{r['restart_settle_seconds']}"),
        (
            "expiring (at N/s, TTL s)",
            lambda r: f"{r['expiring']:,} ({r['expire_rate']:g}, {r['ttl']})",
        ),
        ("expiry lag p50 / p99 / max, s", lambda r: _lags(r["lag_seconds"])),
        ("  session deleted only", lambda r: _lags(r["session_lag_seconds"])),
        ("not removed within max lag", lambda r: f"{r['not_removed_within_max_lag']:,}"),
        ("live ones removed (must be 0)", lambda r: f"{r['live_removed']:,}"),
        ("operator CPU, s", lambda r: f"{r['operator_cpu_seconds']}"),
        ("run time, s", lambda r: f"{r['run_seconds']}"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, cell in rows:
        cells = []
        for r in runs:
            try:
                cells.append(f"{cell(r):>24}")
            except (KeyError, TypeError):
                cells.append(f"{'n/a':>24}")
        lines.append(f"{label:<{width}} " + " ".join(cells))
    return "\n".join(lines)


def _lags(summary: dict[str, float | None]) -> str:
    return " / ".join("n/a" if v is None or math.isnan(v) else f"{v:.3f}" for v in summary.values())


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": [],
    }
    for n in args.participants:
        plane = None
        if args.kubeconfig is None:
            # A fresh server per size: etcd and the apiserver's caches start empty.
            plane = LocalControlPlane()
            await plane.astart()
            kubeconfig = plane.kubeconfig_path
        else:
            kubeconfig = args.kubeconfig
        try:
            report["runs"].append(await run_one(kubeconfig, n, args))
        finally:
            if plane is not None:
                await plane.astop()
        print(table(report["runs"][-1:]), file=sys.stderr, flush=True)
    return report


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n",
        "--participants",
        type=int,
        action="append",
        help="participants (repeatable; default 1000)",
    )
    parser.add_argument("--per-object", type=int, default=100, help="participants per semaphore")
    parser.add_argument("--holders", type=int, default=50, help="of which hold a grant")
    parser.add_argument(
        "--expiring", type=int, default=2000, help="participants that die (at most N)"
    )
    parser.add_argument(
        "--expire-rate", type=float, default=100.0, help="sessions expiring per second"
    )
    parser.add_argument(
        "--ttl", type=int, default=10, help="the expiring participants' session TTL, s"
    )
    parser.add_argument("--max-lag", type=float, default=60.0, help="give up this long after")
    parser.add_argument("--workers", type=int, default=4, help="operator --workers")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("operator-scale.json"))
    args = parser.parse_args(argv)
    args.participants = args.participants or [1000]
    if not 1 <= args.holders <= min(args.per_object, 4096):
        parser.error("--holders must be in 1..min(--per-object, 4096)")
    return args


if __name__ == "__main__":
    arguments = parse()
    started = time.monotonic()
    result = anyio.run(main, arguments, backend="asyncio")
    arguments.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result["runs"]))
    print(f"\n{time.monotonic() - started:.0f} s in all; figures in {arguments.out}")

"""Election soak: candidate processes, random ``kill -9`` and graceful exits, and a checker.

::

    python -m benchmarks.election_soak --duration 600 --candidates 5     # own control plane
    python -m benchmarks.election_soak --kubeconfig ~/.kube/config --namespace soak

Each candidate is a separate process running a :class:`~konductor_sdk.election.LeaderElector`
(``python -m benchmarks.election_soak candidate ...``). While leading it appends to a shared
log, with ``os.write`` on an ``O_APPEND`` descriptor (so a ``kill -9`` loses nothing
written): ``start`` when its term begins and ``end`` when its term's body is cancelled, on
``time.monotonic()``, which is one clock for every process on a Linux machine. That is each
candidate's *believed* validity. The harness kills candidates at random (the current leader
more often) with SIGKILL or SIGTERM and replaces them.

The checker does not take the candidates' word for anything it can see itself. It watches
the Lease object and records every version it receives, with its own receive time, and:

* believed intervals never overlap (a SIGKILLed leader's interval ends when the harness
  saw the process dead), and their tokens strictly increase;
* every term a candidate claims is a grant in the server's history, to that candidate, with
  that token; the history never shows two holders, a token that is not the last issued, or
  a fencing token that goes down;
* after a leader is SIGKILLed, the next grant comes at least ``lease_duration - SLACK``
  after the checker last saw the dead leader's entry renewed (``SLACK`` allows for the
  checker receiving watch events later than the candidate that took over);
* after a leader gets SIGTERM, its entry is *released* (a version without holder) before the
  next grant, rather than taken over on expiry.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs

from konductor_sdk import AlreadyExistsError, Client, Identity
from konductor_sdk._kernel.objects import LEASE, NAMESPACE, KObject

REPO = Path(__file__).resolve().parents[1]
LEASE_NAME = "soak"
SLACK = 0.5


@attrs.frozen
class SoakConfig:
    candidates: int = 4
    duration: float = 30.0
    lease_duration: int = 3
    renew_deadline: float = 2.0
    retry_period: float = 0.5
    every: tuple[float, float] = (1.5, 3.5)
    seed: int | None = None


@attrs.define
class Interval:
    identity: str
    token: int
    start: float
    end: float | None = None
    ended_by: str = ""


@attrs.define
class Kill:
    identity: str
    signal: str
    sent: float
    dead: float = 0.0
    leader_key: str | None = None


@attrs.define
class SoakReport:
    intervals: list[Interval]
    kills: list[Kill]
    versions: int
    crash_failovers: list[float] = attrs.field(factory=list)
    graceful_handoffs: list[float] = attrs.field(factory=list)
    violations: list[str] = attrs.field(factory=list)

    def summary(self) -> str:
        def stats(xs: list[float]) -> str:
            if not xs:
                return "none"
            xs = sorted(xs)
            return f"n={len(xs)} min={xs[0]:.3f}s median={xs[len(xs) // 2]:.3f}s max={xs[-1]:.3f}s"

        return "\n".join(
            [
                f"terms: {len(self.intervals)}, kills/exits: {len(self.kills)}, "
                f"server versions seen: {self.versions}",
                f"crash failover (last renewal seen -> next grant seen): "
                f"{stats(self.crash_failovers)}",
                f"graceful handoff (release seen -> next grant seen): "
                f"{stats(self.graceful_handoffs)}",
                f"violations: {len(self.violations)}",
                *(f"  - {v}" for v in self.violations[:20]),
            ]
        )


# -- the candidate process ------------------------------------------------------------


async def _candidate(args: argparse.Namespace) -> None:
    from konductor_sdk.election import ElectionConfig, LeaderElector

    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(kind: str, **fields: Any) -> None:
        line = {"kind": kind, "identity": args.identity, "t": time.monotonic(), **fields}
        os.write(fd, (json.dumps(line) + "\n").encode())

    async def lead(token: int) -> None:
        emit("start", token=token)
        try:
            await anyio.sleep_forever()
        finally:
            emit("end", token=token)

    config = ElectionConfig(
        args.name,
        identity=args.identity,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
    )
    identity = Identity(holder=args.identity)
    async with Client(kubeconfig=args.kubeconfig, namespace=args.namespace, identity=identity) as c:
        elector = LeaderElector(config, client=c, on_started_leading=lead)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def step_down() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(step_down)
                await elector.run()
    emit("exit")


# -- the harness ----------------------------------------------------------------------


def _spawn(
    kubeconfig: Path, namespace: str, config: SoakConfig, log: Path, identity: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.election_soak",
        "candidate",
        f"--kubeconfig={kubeconfig}",
        f"--namespace={namespace}",
        f"--name={LEASE_NAME}",
        f"--identity={identity}",
        f"--log={log}",
        f"--lease-duration={config.lease_duration}",
        f"--renew-deadline={config.renew_deadline}",
        f"--retry-period={config.retry_period}",
    ]
    stderr = (log.parent / f"{identity}.stderr").open("wb")
    try:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    finally:
        stderr.close()


def _holder(obj: KObject | None) -> tuple[str, dict[str, Any]] | None:
    holders = (obj.status.get("holders") or {}) if obj is not None else {}
    return next(iter(holders.items()), None)


async def run_soak(
    kubeconfig: Path,
    namespace: str,
    config: SoakConfig,
    workdir: Path,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> SoakReport:
    """Run the chaos for ``config.duration`` seconds, then check everything recorded."""
    rng = random.Random(config.seed)
    log = workdir / "terms.jsonl"
    history: list[tuple[float, KObject]] = []
    kills: list[Kill] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    spawned = 0

    def spawn() -> None:
        nonlocal spawned
        identity = f"cand-{spawned}"
        spawned += 1
        procs[identity] = _spawn(kubeconfig, namespace, config, log, identity)

    async def stop(identity: str, sig: signal.Signals, leader_key: str | None) -> None:
        proc = procs.pop(identity)
        kill = Kill(identity, sig.name, time.monotonic(), leader_key=leader_key)
        proc.send_signal(sig)
        try:
            await anyio.to_thread.run_sync(proc.wait, 30)
        except subprocess.TimeoutExpired:
            kill.signal += " (hung; then SIGKILL)"
            proc.kill()
            await anyio.to_thread.run_sync(proc.wait)
        kill.dead = time.monotonic()
        kills.append(kill)

    checker = Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("soak-checker"))
    async with checker:
        watch = await checker.watch(LEASE, namespace)
        remove = watch.add_listener(
            lambda _, obj: (
                history.append((time.monotonic(), obj)) if obj.name == LEASE_NAME else None
            )
        )
        try:
            for _ in range(config.candidates):
                spawn()
            # Cover both failure modes early, then pick at random.
            plan = ["kill-leader", "term-leader"]
            end = time.monotonic() + config.duration
            while time.monotonic() < end:
                await anyio.sleep(rng.uniform(*config.every))
                current = _holder(watch.get(LEASE_NAME))
                leader = current[1]["holder"] if current else None
                action = (
                    plan.pop(0)
                    if plan and leader in procs
                    else rng.choice(
                        ["kill-leader", "kill-leader", "term-leader", "kill-any", "term-any"]
                    )
                )
                if action.endswith("leader") and leader in procs:
                    victim, key = leader, current[0] if current else None
                else:
                    victim, key = rng.choice(sorted(procs)), None
                    key = current[0] if current and victim == leader else None
                sig = signal.SIGKILL if action.startswith("kill") else signal.SIGTERM
                progress(f"{sig.name} {victim}{' (leader)' if key else ''}")
                await stop(victim, sig, key)
                spawn()
        finally:
            for identity in sorted(procs):
                current = _holder(watch.get(LEASE_NAME))
                key = current[0] if current and current[1]["holder"] == identity else None
                await stop(identity, signal.SIGTERM, key)
            remove()
    return check(config, log, history, kills)


# -- the checker ----------------------------------------------------------------------


def check(
    config: SoakConfig, log: Path, history: list[tuple[float, KObject]], kills: list[Kill]
) -> SoakReport:
    intervals: dict[tuple[str, int], Interval] = {}
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for line in lines:
        key = (line["identity"], line.get("token", -1))
        if line["kind"] == "start":
            intervals[key] = Interval(line["identity"], line["token"], line["t"])
        elif line["kind"] == "end" and key in intervals:
            intervals[key].end, intervals[key].ended_by = line["t"], "end"
    report = SoakReport(sorted(intervals.values(), key=lambda i: i.start), kills, len(history))
    v = report.violations
    killed = {k.identity: k for k in kills if k.signal.startswith("SIGKILL")}
    for term in report.intervals:
        if term.end is None:
            if term.identity in killed:
                term.end, term.ended_by = killed[term.identity].dead, "SIGKILL"
            else:
                v.append(f"{term.identity} token {term.token}: no end logged and not killed")
                term.end = float("inf")
    for a, b in zip(report.intervals, report.intervals[1:], strict=False):
        assert a.end is not None
        if b.start < a.end:
            v.append(
                f"overlap: {a.identity} token {a.token} believed until {a.end:.3f} "
                f"({a.ended_by}), {b.identity} token {b.token} from {b.start:.3f}"
            )
        if b.token <= a.token:
            v.append(f"token order: {a.identity} {a.token} then {b.identity} {b.token}")

    # The server's history, as the checker saw it.
    grants: list[tuple[float, str, str, int]] = []  # (seen, key, holder, token)
    last_token = 0
    for seen, obj in history:
        holders = obj.status.get("holders") or {}
        token = int(obj.status.get("fencingToken", 0))
        if len(holders) > 1:
            v.append(f"rv {obj.resource_version}: {len(holders)} holders")
        if token < last_token:
            v.append(f"rv {obj.resource_version}: fencingToken went down {last_token}->{token}")
        last_token = max(last_token, token)
        for key, entry in holders.items():
            if int(entry["token"]) != token:
                v.append(f"rv {obj.resource_version}: holder token {entry['token']} != {token}")
            if not grants or grants[-1][1] != key:
                if grants and int(entry["token"]) <= grants[-1][3]:
                    v.append(f"grant order: token {entry['token']} after {grants[-1][3]}")
                grants.append((seen, key, str(entry["holder"]), int(entry["token"])))
    granted = {(holder, token) for _, _, holder, token in grants}
    for term in report.intervals:
        if (term.identity, term.token) not in granted:
            v.append(f"{term.identity} claims token {term.token}; the server never showed it")

    # Failovers, judged on the history around each stop of a leader.
    for kill in kills:
        if kill.leader_key is not None:
            _judge_failover(config, kill, history, report)
    return report


def _judge_failover(
    config: SoakConfig, kill: Kill, history: list[tuple[float, KObject]], report: SoakReport
) -> None:
    def holder_key(obj: KObject) -> str | None:
        current = _holder(obj)
        return current[0] if current else None

    following = [(t, o) for t, o in history if t >= kill.sent]
    taken = next(
        ((t, o) for t, o in following if holder_key(o) not in (None, kill.leader_key)), None
    )
    if taken is None:
        return  # the run ended before anyone took over
    if kill.signal.startswith("SIGKILL"):
        # When the checker last saw the dead leader's entry *change* (renewCount), not
        # merely another version of the object (a handoff request changes it too).
        last_change, marker = kill.sent, None
        for t, o in history:
            current = _holder(o)
            if t >= taken[0] or current is None or current[0] != kill.leader_key:
                continue
            if current[1].get("renewCount") != marker:
                last_change, marker = t, current[1].get("renewCount")
        gap = taken[0] - last_change
        report.crash_failovers.append(gap)
        if gap < config.lease_duration - SLACK:
            report.violations.append(
                f"{kill.identity} killed; next grant {gap:.3f}s after its last renewal"
            )
    else:
        released = [t for t, o in following if t < taken[0] and holder_key(o) is None]
        if not released:
            report.violations.append(
                f"{kill.identity} got SIGTERM; its lease was taken over, not released"
            )
        else:
            report.graceful_handoffs.append(taken[0] - released[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.election_soak")
    sub = parser.add_subparsers(dest="command")
    cand = sub.add_parser("candidate", help="(internal) one candidate process")
    for flag in ("--kubeconfig", "--namespace", "--name", "--identity", "--log"):
        cand.add_argument(flag, required=True)
    cand.add_argument("--lease-duration", type=int, required=True)
    cand.add_argument("--renew-deadline", type=float, required=True)
    cand.add_argument("--retry-period", type=float, required=True)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--lease-duration", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "candidate":
        anyio.run(_candidate, args)
        return 0
    config = SoakConfig(
        candidates=args.candidates,
        duration=args.duration,
        lease_duration=args.lease_duration,
        renew_deadline=args.lease_duration * 2 / 3,
        retry_period=args.lease_duration / 6,
        seed=args.seed,
    )
    return anyio.run(_main, args, config)


async def _main(args: argparse.Namespace, config: SoakConfig) -> int:
    import tempfile

    from konductor_sdk.testing import LocalControlPlane

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="election-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = args.namespace or f"election-soak-{os.getpid()}"
    plane = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        plane = LocalControlPlane()
        await anyio.to_thread.run_sync(plane.start)
        kubeconfig = plane.kubeconfig_path
    try:
        async with Client(kubeconfig=kubeconfig, namespace=namespace) as admin:
            with contextlib.suppress(AlreadyExistsError):
                await admin.store.create(NAMESPACE, None, {"metadata": {"name": namespace}})
        print(f"soak: {config} in {namespace}, logs in {workdir}", file=sys.stderr)
        report = await run_soak(
            kubeconfig, namespace, config, workdir, progress=lambda m: print(m, file=sys.stderr)
        )
    finally:
        if plane is not None:
            await anyio.to_thread.run_sync(plane.stop)
    print(report.summary())
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

"""One child process of the fault tests, and the two things it shares with the test.

Run as a script by ``tests/e2e/test_faults.py``::

    python _fault_child.py semaphore --kubeconfig K --namespace N --name S --identity a \\
        --ttl 2 --log events.jsonl --fence fence.jsonl [--release-file F] [--writes 10]
    python _fault_child.py leader --kubeconfig K --namespace N --name L --identity a \\
        --lease-duration 3 --renew-deadline 2 --retry-period 0.5 --log ... --fence ...

A child uses only the public SDK API. Its critical-section body does what real code would:
before each write to the protected resource it asks the SDK whether it still holds its
grant (``permit.lost``, ``elector.is_leader``), and it passes its fencing token along. It
can stop itself with SIGSTOP at the top of a step when the test asks (``--pause-file``).
It reports, with ``time.monotonic()`` (one clock for every process of a Linux machine):

* to the :class:`EventLog`, one line per event: ``start`` (the body began), ``write``
  (what the fence answered), ``saw-lost``, ``end`` (the body left), ``permit-lost``,
  ``exit``; each with the token and, for a permit, ``permit.deadline`` and
  ``permit.lost`` as read at that moment;
* to the :class:`Fence`, one write per loop of the body.

Neither is part of the SDK: they are the test's observers.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

# Seconds between two steps (one write each) of a body: much shorter than any TTL used.
WRITE_PERIOD = 0.05
SLOT = "slot-0"


class EventLog:
    """Lines appended with ``O_APPEND`` (atomic per line; a ``kill -9`` loses nothing)."""

    def __init__(self, path: Path, who: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.who = who

    def emit(self, kind: str, *, t: float | None = None, **fields: Any) -> None:
        line = {"who": self.who, "kind": kind, "t": time.monotonic() if t is None else t}
        os.write(self._fd, (json.dumps({**line, **fields}) + "\n").encode())

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        # A line being appended right now may be incomplete: only whole lines count.
        return [json.loads(line) for line in text.splitlines(keepends=True) if line[-1] == "\n"]


class Fence:
    """A resource that fences writes: it accepts a write only if its token is at least the
    highest token it has accepted for that slot, and records every write either way.

    Shared by processes through a file under ``flock``; the record order in the file is
    the order in which the resource decided, and ``t`` is when it decided.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, slot: str, token: int, writer: str) -> bool:
        with self.path.open("a+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.seek(0)
            accepted_tokens = [
                record["token"]
                for record in map(json.loads, file.read().splitlines())
                if record["slot"] == slot and record["accepted"]
            ]
            highest = max(accepted_tokens, default=None)
            accepted = highest is None or token >= highest
            record = {
                "slot": slot,
                "token": token,
                "writer": writer,
                "accepted": accepted,
                "highest": highest,
                "t": time.monotonic(),
            }
            file.write(json.dumps(record) + "\n")
            file.flush()
            return accepted

    def records(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.path.read_text().splitlines()]
        except FileNotFoundError:
            return []


def _pause_if_asked(args: argparse.Namespace, log: EventLog) -> None:
    """Stop this process (SIGSTOP) here, at the top of a body's step, if the test asks.

    The test could send SIGSTOP at any moment, but then what runs first after SIGCONT
    (this body, or a background task of the SDK) would depend on where the signal landed.
    Stopping here makes the first thing after the thaw the body's own check of its grant:
    the moment where a grant that expired during the freeze must be seen as lost.
    """
    if args.pause_file is not None and os.path.exists(args.pause_file):
        os.unlink(args.pause_file)
        log.emit("pausing")
        os.kill(os.getpid(), signal.SIGSTOP)  # the test sends SIGCONT


def _done(args: argparse.Namespace, writes: int) -> bool:
    if args.writes is not None and writes >= args.writes:
        return True
    return args.release_file is not None and Path(args.release_file).exists()


async def _semaphore(args: argparse.Namespace) -> None:
    import anyio

    from konductor_sdk import Client, Identity, Permit, PermitLost, Semaphore

    log, fence = EventLog(Path(args.log), args.identity), Fence(Path(args.fence))

    async def body(permit: Permit) -> None:
        token = permit.token
        log.emit("start", token=token, deadline=permit.deadline, lost=permit.lost)
        writes = 0
        try:
            while True:
                _pause_if_asked(args, log)
                # Read the clock first: whatever `lost` says, it said it after this time.
                t, deadline, lost = time.monotonic(), permit.deadline, permit.lost
                if lost:
                    log.emit("saw-lost", t=t, token=token, deadline=deadline)
                    return
                accepted = fence.write(SLOT, token, args.identity)
                log.emit("write", t=t, token=token, deadline=deadline, accepted=accepted)
                writes += 1
                if _done(args, writes):
                    return
                await anyio.sleep(WRITE_PERIOD)
        finally:
            log.emit("end", token=token)

    identity = Identity(holder=args.identity)
    async with Client(kubeconfig=args.kubeconfig, namespace=args.namespace, identity=identity) as c:
        semaphore = Semaphore(args.name, client=c, ttl=args.ttl)
        log.emit("acquiring")
        try:
            async with semaphore as permit:
                await body(permit)
        except PermitLost as exc:
            log.emit("permit-lost", reason=str(exc))
    log.emit("exit")


async def _leader(args: argparse.Namespace) -> None:
    import anyio

    from konductor_sdk import Client, ElectionConfig, Identity, LeaderElector

    log, fence = EventLog(Path(args.log), args.identity), Fence(Path(args.fence))
    config = ElectionConfig(
        args.name,
        identity=args.identity,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
    )

    async def lead(token: int) -> None:
        log.emit("start", token=token, leading=elector.is_leader)
        try:
            while True:
                _pause_if_asked(args, log)
                t, leading = time.monotonic(), elector.is_leader
                if not leading:
                    log.emit("saw-lost", t=t, token=token)
                    await anyio.sleep_forever()  # the elector cancels this body
                accepted = fence.write(SLOT, token, args.identity)
                log.emit("write", t=t, token=token, accepted=accepted)
                await anyio.sleep(WRITE_PERIOD)
        finally:
            log.emit("end", token=token)

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
                log.emit("campaigning")
                await elector.run()
    log.emit("exit")


def main() -> None:
    import anyio

    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["semaphore", "leader"])
    for flag in ("--kubeconfig", "--namespace", "--name", "--identity", "--log", "--fence"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--release-file", default=None)
    parser.add_argument("--writes", type=int, default=None)
    parser.add_argument("--pause-file", default=None)
    parser.add_argument("--lease-duration", type=int, default=3)
    parser.add_argument("--renew-deadline", type=float, default=2.0)
    parser.add_argument("--retry-period", type=float, default=0.5)
    args = parser.parse_args()
    # The SDK's own account of what it did goes to stderr, which a failing test shows.
    logging.basicConfig(
        level=os.environ.get("KONDUCTOR_FAULT_LOG", "INFO"),
        format="%(relativeCreated)8.0f %(name)s %(levelname)s %(message)s",
    )
    anyio.run(_semaphore if args.role == "semaphore" else _leader, args)


if __name__ == "__main__":
    main()

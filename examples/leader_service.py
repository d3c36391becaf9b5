"""A small leader-elected service: start it several times, one instance works at a time.

::

    python examples/leader_service.py --name report-scheduler          # terminal 1
    python examples/leader_service.py --name report-scheduler          # terminal 2 (standby)
    kubectl get leases.sync.konductor.io report-scheduler              # who leads, token

Ctrl-C (or SIGTERM, as Kubernetes sends on pod deletion) in the leader's terminal: the
standby takes over at once, because the leader releases the lease on the way out.
``kill -9`` the leader instead and the standby takes over after ``--lease-duration``.
``--coordination`` elects on a built-in coordination.k8s.io/v1 Lease instead, which a Go
controller using client-go's leader election can share.

The singleton work gets the term's fencing token: pass it to anything the work writes to
and have that reject tokens lower than the highest it has seen. That, not timing, is what
makes a paused-then-resumed ex-leader harmless (docs/lease.md).
"""

from __future__ import annotations

import argparse
import logging
import signal

import anyio

from konductor_sdk import Client
from konductor_sdk.election import ElectionConfig, LeaderElector

log = logging.getLogger("leader_service")


async def do_the_singleton_work(tick: int, token: int) -> None:
    # Stand-in for the real job: a scheduler pass, a reconciliation, a compaction...
    log.info("tick %d: working with fencing token %d", tick, token)


async def lead(token: int, interval: float) -> None:
    """The leader's body: cancelled as soon as leadership is lost or handed over."""
    log.info("became leader (fencing token %d)", token)
    tick = 0
    try:
        while True:
            tick += 1
            await do_the_singleton_work(tick, token)
            await anyio.sleep(interval)
    finally:
        log.info("stopped working (token %d)", token)


async def serve(args: argparse.Namespace) -> None:
    config = ElectionConfig(
        args.name,
        identity=args.identity,
        lease_duration=args.lease_duration,
        renew_deadline=args.lease_duration * 2 / 3,
        retry_period=args.lease_duration / 6,
        backend="coordination" if args.coordination else "konductor",
    )
    # Configured from the environment: in-cluster, else $KUBECONFIG / ~/.kube/config.
    async with Client() as client:
        elector = LeaderElector(
            config,
            client=client,
            on_started_leading=lambda token: lead(token, args.interval),
            on_stopped_leading=lambda: log.info("not leading"),
            on_new_leader=lambda identity: log.info("the leader is %s", identity),
        )
        await run_until_signalled(elector, args.run_for)


async def run_until_signalled(elector: LeaderElector, run_for: float | None = None) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def shut_down_on_signal() -> None:
                async for signum in signals:
                    log.info("%s: stepping down", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

            tg.start_soon(shut_down_on_signal)
            with anyio.move_on_after(run_for):  # None: until a signal
                await elector.run()
            log.info("ran for %s s: stepping down", run_for)
            tg.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="leader-service", help="lease name")
    parser.add_argument("--identity", default=None, help="default: pod name / host:pid")
    parser.add_argument("--lease-duration", type=int, default=15, help="seconds")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between ticks")
    parser.add_argument("--coordination", action="store_true", help="use coordination.k8s.io")
    parser.add_argument("--run-for", type=float, default=None, help="seconds, then step down")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    anyio.run(serve, args)


if __name__ == "__main__":
    main()

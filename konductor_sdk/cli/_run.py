"""``koncli run``: hold primitives exactly while a child command runs.

The sequence, and what happens on each way out:

1. acquire every ``--semaphore/--mutex/--read/--write/--lease`` and pass every
   ``--gate/--barrier``, in the global order of :mod:`._holds`, within ``--timeout``
   (timeout: release what was taken, exit 3; SIGINT/SIGTERM: leave the queues, release,
   exit 130/143);
2. start the child with ``KONDUCTOR_HOLDS``/``KONDUCTOR_FENCING_TOKEN`` in its environment;
   the SDK renews every hold in the background;
3. forward SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2 to the child (SIGINT only when the
   terminal did not already deliver it to the child's process group);
4. child exits (or crashes): release everything, exit with the child's status;
5. a hold is lost while the child runs: the SDK cancels the body, the child is stopped
   (SIGTERM, then SIGKILL after ``--grace-period``), everything else is released, exit 5.

``--grace-period`` defaults to the renewal safety margin of the shortest TTL (10% of it,
0.2-5 s): a lost permit is noticed that long before anyone else can be granted it, so by
default the child is dead before another holder can start.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import click

from konductor_sdk._kernel.errors import LeadershipLost, PermitLost

from . import _app, _holds, _output, _sdk, _verbs
from ._child import ChildProcess, command_argv, terminal_delivers_sigint
from ._config import Settings
from ._exitcodes import ChildExited, HoldLost, Interrupted, WaitTimedOut

if TYPE_CHECKING:
    from konductor_sdk import Client

FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_INTERRUPTING = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def default_grace(specs: Sequence[_holds.HoldSpec], ttls: dict[_holds.HoldSpec, int]) -> float:
    from konductor_sdk._kernel.entries import safety_margin

    held = [ttls[s] for s in specs if s.kind in _holds.HELD_KINDS]
    return safety_margin(min(held)) if held else 10.0


async def run_holding(
    specs: Sequence[_holds.HoldSpec],
    argv: Sequence[str],
    *,
    cfg: Settings,
    ttl: int | None,
    priority: int,
    acquire_within: float | None,
    grace: float | None,
    quiet: bool = False,
) -> int:
    """Acquire ``specs``, run ``argv``, release; the child's exit status.

    Raises:
        WaitTimedOut: ``acquire_within`` seconds passed while acquiring (``--timeout``).
        Interrupted: a signal arrived before the child started.
        PermitLost, LeadershipLost: a hold ended while the child ran (child stopped).
    """
    ttls = {s: ttl if ttl is not None else cfg.ttl(s.kind) for s in specs}
    grace_s = grace if grace is not None else default_grace(specs, ttls)
    started: list[ChildProcess] = []
    interrupted: list[int] = []
    lost: list[BaseException] = []
    status: int | None = None
    forward_sigint = not terminal_delivers_sigint()

    with anyio.open_signal_receiver(*FORWARDED_SIGNALS) as signals:
        async with anyio.create_task_group() as tg:
            work = anyio.CancelScope()

            async def dispatch() -> None:
                async for signum in signals:
                    if started and started[0].running:
                        if signum != signal.SIGINT or forward_sigint:
                            started[0].send_signal(signum)
                    elif signum in _INTERRUPTING and not interrupted:
                        interrupted.append(signum)
                        work.cancel()

            tg.start_soon(dispatch)
            limit = anyio.CancelScope()
            try:
                with work, limit:
                    async with _app.open_client(cfg) as client:
                        # --timeout bounds the waiting, not loading the SDK (lazy imports).
                        _sdk.preload(spec.kind for spec in specs)
                        if acquire_within:
                            limit.deadline = anyio.current_time() + acquire_within
                        status = await _acquire_and_run(
                            client, specs, argv, ttls, priority, grace_s, limit, quiet, started
                        )
            except* (PermitLost, LeadershipLost) as group:
                lost.extend(_leaves(group))
            tg.cancel_scope.cancel()
    if lost:
        if started and started[0].stop_signals:
            how = " then ".join(s.name for s in started[0].stop_signals)
            raise HoldLost(f"{lost[0]}; stopped the command with {how}") from lost[0]
        raise lost[0]
    if status is not None:
        return status
    if interrupted:
        raise Interrupted(interrupted[0])
    what = ", ".join(s.describe() for s in specs)
    raise WaitTimedOut(f"timed out after {acquire_within:g}s acquiring {what}")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


async def _acquire_and_run(
    client: Client,
    specs: Sequence[_holds.HoldSpec],
    argv: Sequence[str],
    ttls: dict[_holds.HoldSpec, int],
    priority: int,
    grace: float,
    limit: anyio.CancelScope,
    quiet: bool,
    started: list[ChildProcess],
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        holds: list[dict[str, Any]] = []
        for spec in specs:
            if not quiet:
                _output.message(f"koncli: acquiring {spec.describe()}...")
            hold = _sdk.open_hold(client, spec, ttl=ttls[spec], priority=priority, quiet=quiet)
            holds.append(await stack.enter_async_context(hold))
        limit.deadline = math.inf
        # The deadline may have passed during the last acquisition: then stop here.
        await anyio.lowlevel.checkpoint()
        child = ChildProcess(argv, env={**os.environ, **_holds.child_env(holds)}, grace=grace)
        started.append(child)
        return await child.run()


@click.command(
    "run",
    context_settings={"allow_interspersed_args": False},
    epilog=_app.EXIT_CODES_HELP,
)
@click.option(
    "--semaphore",
    "semaphores",
    multiple=True,
    metavar="[NS/]NAME[:WEIGHT]",
    help="Hold permits of this semaphore (repeatable).",
)
@click.option(
    "--weight",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Permits per --semaphore given without :WEIGHT.",
)
@click.option("--mutex", "mutexes", multiple=True, metavar="[NS/]NAME", help="Hold this mutex.")
@click.option("--read", "reads", multiple=True, metavar="[NS/]NAME", help="Read-lock an RWMutex.")
@click.option(
    "--write", "writes", multiple=True, metavar="[NS/]NAME", help="Write-lock an RWMutex."
)
@click.option("--lease", "leases", multiple=True, metavar="[NS/]NAME", help="Hold this lease.")
@click.option(
    "--barrier",
    "barriers",
    multiple=True,
    metavar="[NS/]NAME[:EXPECTED]",
    help="Arrive at this barrier and wait until it opens before starting "
    "(:EXPECTED creates it with that many parties if absent).",
)
@click.option(
    "--gate",
    "gates",
    multiple=True,
    metavar="[NS/]NAME",
    help="Wait until this gate is open before starting.",
)
@click.option("--priority", type=int, default=0, show_default=True, help="Queue priority.")
@_app.ttl_option
@_app.timeout_option
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="SIGTERM-to-SIGKILL delay when a hold is lost "
    "[default: the renewal safety margin, 10% of the shortest TTL, 0.2-5 s].",
)
@_verbs.quiet_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(
    semaphores: tuple[str, ...],
    weight: int,
    mutexes: tuple[str, ...],
    reads: tuple[str, ...],
    writes: tuple[str, ...],
    leases: tuple[str, ...],
    barriers: tuple[str, ...],
    gates: tuple[str, ...],
    priority: int,
    ttl: int | None,
    wait_timeout: float | None,
    grace_period: float | None,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Hold primitives while COMMAND runs; exit with its exit code.

    \b
    koncli run --semaphore gpu-pool:2 --lease db-migrate -- python train.py
    koncli run --barrier stage1 --mutex ns2/report -- ./make-report.sh

    Everything is acquired in one global order (gates, barriers, leases, mutexes,
    rwmutexes, semaphores; then by name), renewed while COMMAND runs and released on
    every exit path. SIGINT/SIGTERM are forwarded to COMMAND. If a hold is lost, COMMAND
    is stopped (SIGTERM, then SIGKILL after --grace-period) and koncli exits 5.
    """
    command = command_argv(command, "koncli run [OPTIONS] -- COMMAND [ARGS]...")
    specs = _holds.build_specs(
        semaphores=semaphores,
        weight=weight,
        mutexes=mutexes,
        reads=reads,
        writes=writes,
        leases=leases,
        barriers=barriers,
        gates=gates,
    )
    cfg = _app.settings()
    status = _app.run_async(
        lambda: run_holding(
            specs,
            command,
            cfg=cfg,
            ttl=ttl,
            priority=priority,
            acquire_within=wait_timeout,
            grace=grace_period,
            quiet=quiet,
        ),
        handle_signals=False,
    )
    if status != 0:
        raise ChildExited(status)

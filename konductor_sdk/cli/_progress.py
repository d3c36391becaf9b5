"""Progress of a wait: the place in the queue and who holds, what a barrier or gate lacks.

While ``semaphore acquire``, ``mutex lock``, ``rwmutex lock`` or ``run`` waits, one line on
stderr says where this process stands (``position 2 of 3``) and who holds the object, and
is redrawn when either changes. It is driven by the object's ``changes()`` (the client's
shared watches of the object and of its claims, the ones the wait itself uses), so a wait
nobody disturbs costs no extra request and redraws nothing. A wait on a lease (``lease
acquire``, ``lease elect``, ``run --lease``), a barrier or a gate shows who holds the lease,
how many parties arrived, or what the gate waits for, from the client's shared watch of the
kind (the one the wait itself uses).

The line appears only while this process actually waits (an uncontended grant, an open
barrier or gate shows nothing), and not with ``--quiet``. On a terminal it is redrawn in
place and erased when the wait ends, however it ends. Elsewhere (a pipe, a pod's log) it
is printed as a plain log line when it changes, at most one every :data:`LOG_EVERY`
seconds, so that an initContainer's log says what it waits for without a line per grant
in a long queue.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio

from . import _output

if TYPE_CHECKING:
    from rich.console import Console

    from konductor_sdk import Client
    from konductor_sdk._kernel.objects import KObject, ResourceKind
    from konductor_sdk.semaphore import HolderInfo, SemaphoreStatus

log = logging.getLogger("konductor_sdk.cli")

SHOWN_HOLDERS: Final = 4
"""Holders named on the line; the others are counted (the line must fit a terminal)."""
LOG_EVERY: Final = 10.0
"""Least seconds between two progress lines in a log (not a terminal)."""
STOP_SECONDS: Final = 2.0
"""Longest the end of a wait waits for the line to be erased (never in practice)."""


def _holder(h: HolderInfo) -> str:
    if h.mode:
        return f"{h.holder} ({h.mode})"
    return f"{h.holder} (weight {h.weight})" if h.weight != 1 else h.holder


def holders_text(holders: Sequence[HolderInfo]) -> str:
    """``alice (weight 2), bob +3 more``; ``nobody`` for none."""
    if not holders:
        return "nobody"
    named = ", ".join(_holder(h) for h in holders[:SHOWN_HOLDERS])
    more = len(holders) - SHOWN_HOLDERS
    return f"{named} +{more} more" if more > 0 else named


def progress_line(status: SemaphoreStatus, holder: str, what: str) -> str | None:
    """The line for ``holder`` waiting on ``what``; ``None`` while its claim is not queued
    (not yet seen, or already granted)."""
    places = [i for i, w in enumerate(status.waiters) if w.holder == holder]
    if not places:
        return None
    return (
        f"koncli: waiting for {what}: position {places[0] + 1} of {len(status.waiters)} "
        f"in the queue; {status.in_use}/{status.limit} in use, "
        f"held by {holders_text(status.holders)}"
    )


def lease_line(obj: KObject, holder: str, what: str) -> str | None:
    """While another holder has the lease: who, with which token; ``None`` otherwise."""
    from konductor_sdk.lease import LeaseStatus

    st = LeaseStatus.from_object(obj)
    if st.holder is None or st.holder == holder:
        return None
    return f"koncli: waiting for {what}: held by {st.holder} (token {st.token})"


def barrier_line(obj: KObject, holder: str, what: str) -> str | None:
    """While the barrier's current generation waits: how many arrived of how many."""
    from konductor_sdk._machines import barrier as barrier_state
    from konductor_sdk.barrier import BarrierStatus

    st = BarrierStatus.from_object(obj)
    if st.phase != barrier_state.WAITING:
        return None
    line = f"koncli: waiting at {what}: {st.arrived}/{st.expected} arrived"
    return line + (f" (generation {st.generation})" if st.generation > 1 else "")


def gate_line(obj: KObject, holder: str, what: str) -> str | None:
    """While the gate waits: how many conditions are met and which ones it waits for."""
    from konductor_sdk._machines import gate as gate_state
    from konductor_sdk.gate import GateStatus

    st = GateStatus.from_object(obj)
    if st.phase != gate_state.WAITING:
        return None
    return f"koncli: waiting for {what}: {st.met}/{st.total} met; {st.message}"


def _enabled(quiet: bool) -> Console | None:
    return None if quiet else _output.stderr_console()


@contextlib.asynccontextmanager
async def _showing(
    client: Client, lines: Callable[[], AsyncGenerator[str | None, None]], *, quiet: bool
) -> AsyncIterator[None]:
    """Show the lines ``lines()`` yields while inside the block (see the module docstring)."""
    console = _enabled(quiet)
    if console is None:
        yield
        return
    scope = anyio.CancelScope()
    stopped = anyio.Event()
    # In the client's task group, not in one of ours: the block enters the permit's
    # context (its own cancel scopes), which must not be nested inside a scope we close
    # first; and no task group wraps the block's errors (WouldBlock, TimeoutError...).
    client.spawn(_show, lines, console, scope, stopped)
    try:
        yield
    finally:
        scope.cancel()
        # Erased before anything else is printed (the key, "acquired", the child's output).
        with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_SECONDS):
            await stopped.wait()


def queue_progress(
    client: Client, front: Any, what: str, *, quiet: bool
) -> contextlib.AbstractAsyncContextManager[None]:
    """Show the progress of the wait inside the block on ``front`` (a Semaphore, Mutex or
    RWMutex of ``client``); see the module docstring for when it is shown."""
    holder = client.identity.holder

    async def lines() -> AsyncGenerator[str | None, None]:
        async with contextlib.aclosing(front.changes()) as changes:
            async for status in changes:
                yield progress_line(status, holder, what)

    return _showing(client, lines, quiet=quiet)


def object_progress(
    client: Client,
    kind: ResourceKind,
    namespace: str,
    name: str,
    line: Callable[[KObject, str, str], str | None],
    what: str,
    *,
    quiet: bool,
) -> contextlib.AbstractAsyncContextManager[None]:
    """Show ``line(object, holder, what)`` for the object ``kind``/``namespace``/``name``
    while inside the block, redrawn whenever the client's shared watch of the kind sees it
    change (:func:`lease_line`, :func:`barrier_line`, :func:`gate_line`)."""
    holder = client.identity.holder

    async def lines() -> AsyncGenerator[str | None, None]:
        watch = await client.watch(kind, namespace)
        while True:
            changed = watch.next_change(name, namespace)
            obj = watch.get(name, namespace)
            yield None if obj is None else line(obj, holder, what)
            await changed.wait()

    return _showing(client, lines, quiet=quiet)


async def _show(
    lines: Callable[[], AsyncGenerator[str | None, None]],
    console: Console,
    scope: anyio.CancelScope,
    stopped: anyio.Event,
) -> None:
    from rich.live import Live
    from rich.text import Text

    live = Live(console=console, transient=True, auto_refresh=False, redirect_stdout=False)
    logged: tuple[str, float] | None = None  # (line, when) last printed, off a terminal
    try:
        with scope:
            async with contextlib.aclosing(lines()) as shown:
                async for line in shown:
                    if not console.is_terminal:
                        now = anyio.current_time()
                        if line is not None and (
                            logged is None or (line != logged[0] and now - logged[1] >= LOG_EVERY)
                        ):
                            console.print(line, markup=False, highlight=False, soft_wrap=True)
                            logged = (line, now)
                        continue
                    if line is None and not live.is_started:
                        continue
                    if not live.is_started:
                        live.start()
                    live.update(Text(line or ""), refresh=True)
    except Exception as exc:  # the wait itself reports what went wrong; this only shows it
        log.debug("progress ended: %s", exc)
    finally:
        if live.is_started:
            live.stop()
        stopped.set()

"""The progress line of a wait on the semaphore family (no server: statuses are fed in)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from rich.console import Console

from konductor_sdk.cli import _output, _progress
from konductor_sdk.semaphore import HolderInfo, SemaphoreStatus, WaiterInfo

pytestmark = pytest.mark.anyio


def holder(name: str, slot: int, weight: int = 1, mode: str | None = None) -> HolderInfo:
    return HolderInfo(
        key=f"{slot}#{slot + 1}",
        slot=slot,
        holder=name,
        session=f"{name}-s",
        creator="u",
        claim=None,
        weight=weight,
        priority=0,
        token=slot + 1,
        preemptible=False,
        preempt_requested=False,
        burst=False,
        mode=mode,
        ttl_seconds=None,
        granted_at=None,
    )


def waiter(name: str, ticket: int) -> WaiterInfo:
    return WaiterInfo(
        key=f"gpu-{name}",
        holder=name,
        session=f"{name}-s",
        pod=None,
        weight=1,
        priority=0,
        ticket=ticket,
        preemptible=False,
        allow_burst=False,
        mode=None,
        ttl_seconds=30,
    )


def status(holders: list[HolderInfo], waiters: list[WaiterInfo], limit: int = 3) -> SemaphoreStatus:
    used = sum(h.weight for h in holders)
    return SemaphoreStatus(
        kind="Semaphore",
        name="gpu",
        namespace="ml",
        limit=limit,
        burst=0,
        burst_seconds=60,
        in_use=used,
        available=max(0, limit - used),
        phase="Full" if used >= limit else "Ready",
        fencing_token=len(holders),
        holders=tuple(holders),
        waiters=tuple(waiters),
        generation=1,
        observed_generation=1,
    )


def test_line_names_the_place_in_the_queue_and_the_holders() -> None:
    full = status([holder("alice", 0, 2), holder("bob", 2)], [waiter("carol", 5), waiter("me", 7)])
    assert _progress.progress_line(full, "me", "semaphore ml/gpu") == (
        "koncli: waiting for semaphore ml/gpu: position 2 of 2 in the queue; "
        "3/3 in use, held by alice (weight 2), bob"
    )
    assert _progress.progress_line(full, "carol", "x").startswith(
        "koncli: waiting for x: position 1 of 2"
    )
    # Not queued (yet, or any more): nothing to show.
    assert _progress.progress_line(full, "dave", "x") is None


def test_holders_are_named_up_to_a_few_with_their_mode() -> None:
    many = [holder(f"r{i}", i, mode="read") for i in range(6)]
    assert _progress.holders_text(many) == "r0 (read), r1 (read), r2 (read), r3 (read) +2 more"
    assert _progress.holders_text([]) == "nobody"


class FakeFront:
    """A front object whose ``changes()`` yields what the test sends, like the watches."""

    def __init__(self) -> None:
        self.send, self._receive = anyio.create_memory_object_stream[SemaphoreStatus](10)
        self.closed = anyio.Event()

    def __enter__(self) -> FakeFront:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.send.close()
        self._receive.close()

    async def changes(self) -> AsyncIterator[SemaphoreStatus]:
        try:
            async for item in self._receive:
                yield item
        finally:
            self.closed.set()


class FakeClient:
    """What ``queue_progress`` uses of a client: its identity and its task group."""

    def __init__(self, tg: Any) -> None:
        self.identity = type("Identity", (), {"holder": "me"})()
        self._tg = tg

    def spawn(self, func: Any, *args: Any) -> None:
        self._tg.start_soon(func, *args)


def terminal(monkeypatch: pytest.MonkeyPatch, *, is_terminal: bool) -> io.StringIO:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=is_terminal, color_system=None)
    monkeypatch.setattr(_output, "stderr_console", lambda: console)
    return out


async def wait_for(out: io.StringIO, text: str) -> None:
    # The display task writes when it gets a status; yield until it has (no clock).
    with anyio.fail_after(5):
        while text not in out.getvalue():
            await anyio.lowlevel.checkpoint()


async def test_a_queued_wait_shows_its_place_and_updates_on_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = terminal(monkeypatch, is_terminal=True)
    with FakeFront() as front:
        async with anyio.create_task_group() as tg:
            client = FakeClient(tg)
            async with _progress.queue_progress(client, front, "semaphore ml/gpu", quiet=False):
                # Granted at once: no claim queued, nothing drawn.
                await front.send.send(status([holder("alice", 0)], []))
                await front.send.send(
                    status([holder("alice", 0, 3)], [waiter("bob", 1), waiter("me", 2)])
                )
                await wait_for(out, "position 2 of 2")
                assert out.getvalue().count("koncli: waiting") == 1
                assert "held by alice (weight 3)" in out.getvalue()
                # bob gave up: the line is redrawn with the new place.
                await front.send.send(status([holder("alice", 0, 3)], [waiter("me", 2)]))
                await wait_for(out, "position 1 of 1")
            # The wait ended: the watch iteration is closed and the line erased.
            assert front.closed.is_set()
    # The last thing written erases the line (rich's transient Live: erase-line codes).
    drawn = out.getvalue()
    assert drawn.rindex("\x1b[2K") > drawn.rindex("position 1 of 1")


@pytest.mark.parametrize("is_terminal", [True, False])
async def test_quiet_shows_nothing(monkeypatch: pytest.MonkeyPatch, is_terminal: bool) -> None:
    out = terminal(monkeypatch, is_terminal=is_terminal)
    with FakeFront() as front:
        async with anyio.create_task_group() as tg:
            client = FakeClient(tg)
            async with _progress.queue_progress(client, front, "x", quiet=True):
                await front.send.send(status([holder("alice", 0, 3)], [waiter("me", 2)]))
                await anyio.lowlevel.checkpoint()
    assert out.getvalue() == ""
    assert not front.closed.is_set()  # not even watched


async def log_lines(monkeypatch: pytest.MonkeyPatch, every: float) -> list[str]:
    """What a wait logs off a terminal while the queue moves on twice, then once more
    without any change, with ``LOG_EVERY`` = ``every``."""
    out = terminal(monkeypatch, is_terminal=False)
    monkeypatch.setattr(_progress, "LOG_EVERY", every)
    with FakeFront() as front:
        async with anyio.create_task_group() as tg:
            client = FakeClient(tg)
            async with _progress.queue_progress(client, front, "x", quiet=False):
                alice = [holder("alice", 0, 3)]
                await front.send.send(status(alice, [waiter("carol", 1), waiter("me", 2)]))
                await front.send.send(status(alice, [waiter("me", 2)]))
                await front.send.send(status(alice, [waiter("me", 2)]))
                await front.send.send(status([holder("bob", 0, 3)], [waiter("me", 2)]))
                await front.send.send(status([holder("bob", 0, 3)], [waiter("me", 2)]))
                await wait_for(out, "\n")  # the first line is written
                with anyio.fail_after(5):
                    while front._receive.statistics().current_buffer_used:
                        await anyio.lowlevel.checkpoint()  # the rest are consumed
                await anyio.lowlevel.checkpoint()
    assert "\x1b" not in out.getvalue()  # plain lines: nothing redrawn in a log
    return out.getvalue().splitlines()


async def test_off_a_terminal_each_change_is_a_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await log_lines(monkeypatch, 0.0) == [
        "koncli: waiting for x: position 2 of 2 in the queue; 3/3 in use, held by alice (weight 3)",
        "koncli: waiting for x: position 1 of 1 in the queue; 3/3 in use, held by alice (weight 3)",
        "koncli: waiting for x: position 1 of 1 in the queue; 3/3 in use, held by bob (weight 3)",
    ]


async def test_off_a_terminal_log_lines_are_at_most_one_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await log_lines(monkeypatch, 3600.0) == [
        "koncli: waiting for x: position 2 of 2 in the queue; 3/3 in use, held by alice (weight 3)",
    ]


async def test_a_failing_watch_does_not_break_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    out = terminal(monkeypatch, is_terminal=True)

    class Gone(FakeFront):
        async def changes(self) -> AsyncIterator[SemaphoreStatus]:
            raise LookupError("the object does not exist")
            yield  # pragma: no cover

    with Gone() as gone:
        async with anyio.create_task_group() as tg:
            client = FakeClient(tg)
            async with _progress.queue_progress(client, gone, "x", quiet=False):
                await anyio.lowlevel.checkpoint()
    assert "waiting" not in out.getvalue()

"""The blocking machinery of ``konductor_sdk.sync`` without a server: ``with`` over
``async with`` in one task, bodies the async side cannot cancel, Ctrl-C while waiting,
results given back, twins one per object, shutdown."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from konductor_sdk.sync import _context, _portal, _twin


class Lost(Exception):
    pass


class Holding:
    """An async context manager shaped like ``Semaphore.hold()``: its body is cancelled
    when the holding is lost, and the loss is raised on exit."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.body: anyio.CancelScope | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[str]:
        self.log.append(("enter", anyio.get_current_task().id))
        with anyio.CancelScope() as self.body:
            try:
                yield "permit"
            except BaseException as exc:
                self.log.append(("body raised", type(exc).__name__))
                raise
            finally:
                self.log.append(("exit", anyio.get_current_task().id))
        if self.body.cancel_called:
            raise Lost("lost while held")

    def lose(self) -> None:
        assert self.body is not None
        self.body.cancel()


def test_enter_and_exit_run_in_one_task_and_see_the_body_exception() -> None:
    holding = Holding()

    def body() -> None:
        with _context.blocking(holding.hold(), str.upper) as value:
            assert value == "PERMIT"
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        body()
    (_, entered), raised, (_, left) = holding.log
    assert entered == left
    assert raised == ("body raised", "ZeroDivisionError")


def test_a_body_the_async_side_cancels_runs_to_its_end_and_the_loss_is_raised_then() -> None:
    holding = Holding()
    ran: list[str] = []

    def body() -> None:
        with _context.blocking(holding.hold(), _twin.same):
            _portal.call(holding.lose)  # what a lost permit's keeper does
            _portal.run(anyio.sleep, 0.05)  # the loop gets to deliver the cancellation
            ran.append("still running")

    with pytest.raises(Lost):
        body()
    assert ran == ["still running"]
    assert [e[0] for e in holding.log] == ["enter", "exit"]


def test_one_twin_serves_many_threads_with_one_block_stack_each() -> None:
    class Twin(_context.BlockingContext):
        def __enter__(self) -> str:
            return self._enter_block(_context.blocking(Holding().hold(), _twin.same))

    twin, inside, go = Twin(), threading.Barrier(3), threading.Event()
    errors: list[BaseException] = []

    def use() -> None:
        try:
            with twin:
                inside.wait(10)
                go.wait(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(2)]
    for t in threads:
        t.start()
    with twin:
        inside.wait(10)
        go.set()
    for t in threads:
        t.join(10)
    assert errors == []


def test_ctrl_c_while_entering_cancels_the_entry(
    interrupt_main_thread: Callable[[threading.Event], None],
) -> None:
    started, cancelled, log = threading.Event(), threading.Event(), []

    @asynccontextmanager
    async def waiting() -> AsyncIterator[None]:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            log.append("entry cancelled")
            cancelled.set()
            raise
        yield  # pragma: no cover - never entered
        log.append("exited")  # pragma: no cover

    interrupt_main_thread(started)
    with pytest.raises(KeyboardInterrupt), _context.blocking(waiting(), _twin.same):
        pass  # pragma: no cover
    assert cancelled.wait(30), "the entry was not cancelled"
    assert log == ["entry cancelled"]


def test_ctrl_c_cancels_a_call_and_a_result_nobody_will_see_is_given_back(
    interrupt_main_thread: Callable[[threading.Event], None],
) -> None:
    started, released = threading.Event(), threading.Event()

    class Granted:
        async def release(self) -> None:
            released.set()

    async def acquire() -> Granted:
        started.set()
        with anyio.CancelScope(shield=True):  # granted although the caller gave up
            await anyio.sleep(0.3)
        return Granted()

    interrupt_main_thread(started)
    with pytest.raises(KeyboardInterrupt):
        _portal.run(acquire)
    assert released.wait(10)


def test_shutdown_ends_blocks_still_open_in_other_threads() -> None:
    holding, entered, done = Holding(), threading.Event(), threading.Event()
    outcome: list[Any] = []

    def stuck() -> None:
        try:
            with _context.blocking(holding.hold(), _twin.same):
                entered.set()
                done.wait(10)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append("left")

    thread = threading.Thread(target=stuck)
    thread.start()
    assert entered.wait(10)
    _portal.shutdown()  # as at interpreter exit, with a thread still inside its block
    assert [e[0] for e in holding.log] == ["enter", "exit"]
    done.set()
    thread.join(10)
    assert outcome == ["left"]
    assert _portal.call(lambda: 42) == 42  # the next call starts a new loop


def test_a_twin_per_async_object() -> None:
    class Thing:
        pass

    class ThingTwin(_twin.Twin[Thing]):
        pass

    thing = Thing()
    twin = ThingTwin._wrap(thing)
    assert ThingTwin._wrap(thing) is twin
    assert _twin.unwrap(twin) is thing
    assert _twin.unwrap(None) is None


def test_event_is_the_blocking_face_of_an_anyio_event() -> None:
    async def make() -> anyio.Event:
        return anyio.Event()

    event = _portal.run(make)
    blocking = _twin.Event(event)
    assert not blocking
    assert not blocking.is_set()
    _portal.call(event.set)
    blocking.wait()
    assert blocking
    assert blocking.is_set()


def test_plain_callbacks_run_in_worker_threads() -> None:
    loop_thread = _portal.call(threading.get_ident)
    ran_in: list[int] = []

    def callback(x: int) -> int:
        ran_in.append(threading.get_ident())
        return x + 1

    wrapped = _twin.awaitable(callback)
    assert _portal.run(wrapped, 1) == 2
    assert ran_in
    assert ran_in[0] != loop_thread

    async def already_async(x: int) -> int:
        return x

    assert _twin.awaitable(already_async) is already_async
    assert _twin.awaitable(None) is None

"""CEL over arbitrary objects, for the Gate's ``object`` conditions, with bounded cost.

The implementation is ``common-expression-language`` (Python bindings of the Rust ``cel``
crate), not a home-made parser. CEL has no loops or recursion, but its macros nest
(``l.map(a, l.map(b, ...))``), so cost grows polynomially with the input, and the Rust
evaluator holds the GIL while it runs: an expensive expression evaluated in-process would
freeze the operator's event loop. So the operator evaluates in a worker *process*
(``cel_worker.py``, stdlib + cel only) and kills it when the time limit passes.
The bounds:

* the expression: at most :data:`MAX_EXPRESSION` characters (parsing is linear and its
  nesting depth is limited by the parser itself);
* the object: at most :data:`MAX_OBJECT_BYTES` of JSON;
* time: :data:`EVAL_TIMEOUT_SECONDS` per evaluation, then the worker is killed and a new
  one started for the next evaluation;
* memory: the worker's address space is capped at :data:`WORKER_MEMORY_BYTES`.

Nothing raises: every failure (syntax, missing field, wrong result type, timeout, a dead
worker) comes back as a :class:`CelOutcome` whose ``error`` the operator writes into the
gate's status.

The operator evaluates through a :class:`CelPool`: a bounded number of worker processes
(:class:`CelEvaluator` each) and one FIFO queue per key (a gate), served round-robin, so
one gate's slow expressions delay another gate's by at most one evaluation per worker,
and a key can queue at most :data:`MAX_PENDING_PER_KEY` evaluations.
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, final

import anyio
import attrs
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.limits import MAX_EXPRESSION

MAX_OBJECT_BYTES: Final = 256 * 1024
EVAL_TIMEOUT_SECONDS: Final = 1.0
WORKER_MEMORY_BYTES: Final = 1 << 30
MAX_PENDING_PER_KEY: Final = 64
_START_TIMEOUT_SECONDS: Final = 60.0
_WORKER: Final = Path(__file__).with_name("cel_worker.py")


@attrs.frozen
class CelOutcome:
    """The value of a boolean expression, or why there is none."""

    value: bool | None
    error: str | None = None


def check_expression(expression: str) -> None:
    """Compile ``expression`` (length-bounded) to report syntax errors early.

    Raises:
        ConfigurationError: too long, or not valid CEL.
    """
    if not isinstance(expression, str) or not 0 < len(expression) <= MAX_EXPRESSION:
        raise ConfigurationError(
            f"expression must be 1..{MAX_EXPRESSION} characters of CEL, got {expression!r}"
        )
    error = _compile_error(expression)
    if error is not None:
        raise ConfigurationError(f"expression is not valid CEL: {error}")


def _compile_error(expression: str) -> str | None:
    import cel

    try:
        cel.compile(expression)
    except Exception as exc:  # the bindings raise ValueError; be total anyway
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:300]


@final
class CelEvaluator:
    """One worker process evaluating expressions one at a time; killed and restarted when
    an evaluation overruns. Use as ``async with CelEvaluator() as cel: ...``."""

    def __init__(
        self,
        *,
        timeout: float = EVAL_TIMEOUT_SECONDS,
        memory_bytes: int = WORKER_MEMORY_BYTES,
    ) -> None:
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self._proc: Process | None = None
        self._out: BufferedByteReceiveStream | None = None
        self._lock = anyio.Lock()
        self.evaluations = 0
        self.restarts = 0

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc is not None else None
        return f"<CelEvaluator pid={pid} evaluations={self.evaluations} restarts={self.restarts}>"

    async def __aenter__(self) -> CelEvaluator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._kill()

    async def _kill(self) -> None:
        proc, self._proc, self._out = self._proc, None, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await proc.aclose()

    async def _start(self) -> tuple[Process, BufferedByteReceiveStream]:
        if self._proc is not None and self._out is not None and self._proc.returncode is None:
            return self._proc, self._out
        await self._kill()
        self.restarts += 1
        # Run the worker by path, not as a package module: it imports only the stdlib and
        # cel, so it starts fast, and a crash in the Rust code cannot take us down.
        proc = await anyio.open_process(
            # -P: the worker's own directory (the kernel package) must not shadow libraries.
            [sys.executable, "-u", "-P", str(_WORKER), str(self.memory_bytes)],
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        out = BufferedByteReceiveStream(proc.stdout)
        self._proc, self._out = proc, out
        try:
            with anyio.fail_after(_START_TIMEOUT_SECONDS):
                ready = await out.receive_until(b"\n", 64)
        except TimeoutError:
            raise anyio.BrokenWorkerProcess("the CEL worker did not start") from None
        if ready != b"READY":
            raise anyio.BrokenWorkerProcess(f"unexpected worker greeting {ready!r}")
        return proc, out

    async def evaluate(self, expression: str, obj: Mapping[str, Any]) -> CelOutcome:
        """Evaluate ``expression`` with ``object`` bound to ``obj``.

        Never raises except for cancellation of the caller.
        """
        if not 0 < len(expression) <= MAX_EXPRESSION:
            return CelOutcome(None, f"expression must be 1..{MAX_EXPRESSION} characters")
        try:
            object_json = json.dumps(obj, separators=(",", ":"), default=str)
        except (TypeError, ValueError) as exc:
            return CelOutcome(None, f"object is not JSON: {exc}")
        if len(object_json) > MAX_OBJECT_BYTES:
            return CelOutcome(None, f"object is larger than {MAX_OBJECT_BYTES // 1024} KiB of JSON")
        request = f'{{"expression":{json.dumps(expression)},"object":{object_json}}}'
        async with self._lock:
            self.evaluations += 1
            try:
                proc, out = await self._start()
                assert proc.stdin is not None
                await proc.stdin.send(request.encode() + b"\n")
                with anyio.fail_after(self.timeout):
                    line = await out.receive_until(b"\n", 64 * 1024)
            except TimeoutError:
                await self._kill_shielded()
                return CelOutcome(None, f"evaluation took longer than {self.timeout:g}s")
            except (
                anyio.BrokenWorkerProcess,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.IncompleteRead,
                anyio.DelimiterNotFound,
                OSError,
            ) as exc:
                await self._kill_shielded()
                return CelOutcome(None, f"evaluator process failed: {exc!r}")
            except BaseException:
                # Cancelled mid-evaluation: the worker's answer would be read by the next
                # caller; start afresh instead.
                await self._kill_shielded()
                raise
        try:
            answer = json.loads(line)
            value, error = answer.get("value"), answer.get("error")
        except (ValueError, AttributeError):
            return CelOutcome(None, "evaluator process answered garbage")
        if error is not None:
            return CelOutcome(None, str(error))
        if not isinstance(value, bool):
            return CelOutcome(None, f"expression must evaluate to a bool, got {value!r}")
        return CelOutcome(value)

    async def _kill_shielded(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._kill()


class Evaluator(Protocol):
    """What a :class:`CelPool` worker evaluates with (a :class:`CelEvaluator`)."""

    async def evaluate(self, expression: str, obj: Mapping[str, Any]) -> CelOutcome: ...

    async def aclose(self) -> None: ...


@attrs.define
class _Job:
    expression: str
    obj: Mapping[str, Any]
    done: anyio.Event = attrs.field(factory=anyio.Event)
    outcome: CelOutcome | None = None
    abandoned: bool = False


@final
class CelPool:
    """A bounded pool of CEL workers with one queue per key, served round-robin.

    ``await pool.evaluate(key, expression, obj)`` queues the evaluation under ``key`` (the
    gate); ``workers`` tasks, each owning one evaluator (a worker process), take the next
    job from the next key that has one, in turn, and a key whose job is running waits for
    it to finish before its next turn. So a key with many slow expressions occupies at most
    one worker and gets one evaluation per turn like every other key, and at most
    ``workers`` evaluations (processes) run at once. Use as ``async with CelPool() as pool``.

    Args:
        workers: evaluations running at once (one worker process each).
        factory: makes one worker's evaluator; default :class:`CelEvaluator` with
            ``timeout``/``memory_bytes``.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        timeout: float = EVAL_TIMEOUT_SECONDS,
        memory_bytes: int = WORKER_MEMORY_BYTES,
        factory: Callable[[], Evaluator] | None = None,
    ) -> None:
        if not 1 <= workers <= 64:
            raise ConfigurationError(f"workers must be in 1..64, got {workers}")
        self.workers = workers
        self._factory: Callable[[], Evaluator] = factory or (
            lambda: CelEvaluator(timeout=timeout, memory_bytes=memory_bytes)
        )
        self._queues: dict[Hashable, collections.deque[_Job]] = {}
        # Keys with queued jobs and none running, in the order they are served.
        self._turns: collections.deque[Hashable] = collections.deque()
        self._busy: set[Hashable] = set()  # keys with a job running
        self._wakeup = anyio.Event()
        self._tg: TaskGroup | None = None
        self.running = 0
        self.evaluations = 0

    def __repr__(self) -> str:
        pending = sum(len(q) for q in self._queues.values())
        return (
            f"<CelPool workers={self.workers} running={self.running} pending={pending} "
            f"keys={len(self._turns)}>"
        )

    async def __aenter__(self) -> CelPool:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for _ in range(self.workers):
            self._tg.start_soon(self._worker)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    def pending(self, key: Hashable) -> int:
        """Evaluations queued (not yet running) under ``key``."""
        return len(self._queues.get(key, ()))

    async def evaluate(self, key: Hashable, expression: str, obj: Mapping[str, Any]) -> CelOutcome:
        """Evaluate ``expression`` with ``object`` bound to ``obj``, queued under ``key``.

        Never raises except for cancellation of the caller.
        """
        if self._tg is None:
            raise RuntimeError("CelPool is not running: use `async with CelPool() as pool`")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
        if len(queue) >= MAX_PENDING_PER_KEY:
            return CelOutcome(None, f"more than {MAX_PENDING_PER_KEY} evaluations pending")
        job = _Job(expression, obj)
        if not queue and key not in self._busy:
            self._turns.append(key)
        queue.append(job)
        self._wakeup.set()
        try:
            await job.done.wait()
        except BaseException:
            job.abandoned = True  # a worker that has not taken it yet skips it
            raise
        assert job.outcome is not None
        return job.outcome

    def _next_job(self) -> tuple[Hashable, _Job] | None:
        while self._turns:
            key = self._turns.popleft()
            queue = self._queues[key]
            job = queue.popleft()
            if job.abandoned:
                if queue:
                    self._turns.append(key)
                else:
                    del self._queues[key]
                continue
            self._busy.add(key)  # its next job waits until this one is done
            return key, job
        return None

    def _finished(self, key: Hashable) -> None:
        self._busy.discard(key)
        if self._queues.get(key):
            self._turns.append(key)  # behind every key that waited meanwhile
            self._wakeup.set()
        else:
            self._queues.pop(key, None)

    async def _worker(self) -> None:
        evaluator = self._factory()
        try:
            while True:
                picked = self._next_job()
                if picked is None:
                    self._wakeup = anyio.Event() if self._wakeup.is_set() else self._wakeup
                    await self._wakeup.wait()
                    continue
                key, job = picked
                self.running += 1
                try:
                    job.outcome = await evaluator.evaluate(job.expression, job.obj)
                finally:
                    self.running -= 1
                    self.evaluations += 1
                    if job.outcome is None:  # cancelled mid-evaluation
                        job.outcome = CelOutcome(None, "evaluation cancelled")
                    job.done.set()
                    self._finished(key)
        finally:
            with anyio.CancelScope(shield=True):
                await evaluator.aclose()

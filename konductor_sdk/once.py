"""Once: run a function once per name across the cluster; everyone gets its outcome.

::

    once = Once("init-db")
    schema_version = await once.run(migrate)   # one caller runs migrate(); all get its value

The first caller to claim the Once (a CAS write) runs the function while renewing its claim;
the others watch. The outcome (the JSON value, or the error) is recorded once and returned
to every caller, now and later. If the runner dies, its claim stops being renewed; after its
TTL (judged by each waiter on its own monotonic clock, or by the operator) another caller
takes over and runs the function again. A runner that cannot renew cancels the function
before anyone may take over. So the *recorded outcome* is exactly one; the function itself
may start again after a crash (make it idempotent, or fence it with :attr:`OnceStatus.attempts`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, final

import anyio
import attrs

from konductor_sdk._front_bases import ObjectFront
from konductor_sdk._kernel.cas import CasResult, ensure_exists, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.entries import (
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    ExpiryTracker,
    Renewal,
    new_entry,
)
from konductor_sdk._kernel.errors import APIError, ConfigurationError, NotFoundError, OnceFailed
from konductor_sdk._kernel.objects import ONCE, KObject
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._kernel.waiting import newest, wait_any
from konductor_sdk._machines import once as state

log = logging.getLogger("konductor_sdk.once")
_CLEANUP_SECONDS = 10.0


@final
@attrs.frozen
class OnceStatus:
    """A Once as read from the server."""

    name: str
    namespace: str
    phase: str
    attempts: int
    runner: str | None
    result: Any
    error_type: str | None
    error_message: str | None
    started_at: str | None
    completed_at: str | None
    completed_by: str | None

    @classmethod
    def from_object(cls, obj: KObject) -> OnceStatus:
        s = state.normalize(obj.spec, obj.status)
        current = state.runner(s)
        error = s.get("error") or {}
        return cls(
            name=obj.name,
            namespace=obj.namespace,
            phase=s["phase"],
            attempts=s["attempts"],
            runner=str(current[1].get("holder", current[0])) if current else None,
            result=json.loads(s["result"]) if "result" in s else None,
            error_type=error.get("type"),
            error_message=error.get("message"),
            started_at=s.get("startedAt"),
            completed_at=s.get("completedAt"),
            completed_by=s.get("completedBy"),
        )


@final
@attrs.frozen
class OnceStatistics:
    """What this :class:`Once` instance has done.

    Attributes:
        ran: times this instance ran the function (including runs cut short).
        took_over: claims that replaced a runner judged dead.
        waited: calls that returned (or raised) another caller's outcome.
        writes: status writes made.
    """

    ran: int
    took_over: int
    waited: int
    writes: int


@final
class Once(ObjectFront):
    """Run a function exactly once per name, cluster-wide.

    Args:
        name: the Once object's name.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.
        ttl: seconds the runner's claim lives without renewal (how long a crashed
            runner delays the others).

    Raises:
        ConfigurationError: an argument is out of range.
    """

    KIND = ONCE

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None = None,
        client: Client | None = None,
        ttl: float = 30,
    ) -> None:
        super().__init__(name, namespace=namespace, client=client)
        ttl_ok = isinstance(ttl, int | float) and not isinstance(ttl, bool)
        if not ttl_ok or not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            raise ConfigurationError(
                f"ttl must be a number of seconds in {MIN_TTL_SECONDS}..{MAX_TTL_SECONDS}, "
                f"got {ttl!r}"
            )
        self._ttl = math.ceil(ttl)
        self._ran = self._took_over = self._waited = self._writes = 0

    def __repr__(self) -> str:
        return f"<Once {self._namespace or '?'}/{self.name} ttl={self._ttl}>"

    def statistics(self) -> OnceStatistics:
        """Counters of this instance (no I/O)."""
        return OnceStatistics(self._ran, self._took_over, self._waited, self._writes)

    async def _cas(
        self,
        client: Client,
        ns: str,
        mutate: Callable[[KObject], state.Status | None],
        current: KObject | None = None,
    ) -> CasResult:
        def stamped(obj: KObject) -> state.Status | None:
            new = mutate(obj)
            if new is not None:
                new["observedGeneration"] = obj.generation
            return new

        result = await update_status(client, ONCE, ns, self.name, stamped, current=current)
        self._writes += int(result.wrote)
        return result

    async def status(self) -> OnceStatus:
        """The Once as the server (or the watch cache) has it now."""
        return OnceStatus.from_object(await self._read())

    async def reset(self) -> bool:
        """Forget the outcome so that the next :meth:`run` runs the function again (a
        runner still running loses its claim). ``False`` if there was nothing to forget."""
        client, ns = await self._connect()
        try:
            result = await self._cas(client, ns, lambda o: state.reset(o.spec, o.status))
        except NotFoundError:
            return False
        return result.wrote

    async def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn`` if nobody has (or is running it), else wait for its outcome.

        Args:
            fn: an async function without arguments; its value must be JSON-serialisable
                and at most 64 KiB as JSON.

        Returns:
            The recorded value (as decoded from JSON: tuples come back as lists).

        Raises:
            OnceFailed: the function raised (in whichever caller ran it), or its value
                could not be recorded; the runner's own exception is the ``__cause__``.
        """
        client, ns = await self._connect()
        with span("once.run", once=self.name, namespace=ns):
            await ensure_exists(client, ONCE, ns, self.name, {})
            watch = await client.watch(ONCE, ns)
            tracker = ExpiryTracker(client.clock)
            latest: KObject | None = None
            while True:
                changed = watch.next_change(self.name, ns)
                obj = newest(watch.get(self.name, ns), latest)
                if obj is None:
                    obj = await ensure_exists(client, ONCE, ns, self.name, {})
                s = state.normalize(obj.spec, obj.status)
                if s["phase"] in (state.DONE, state.FAILED):
                    self._waited += 1
                    return self._outcome(ns, s)
                takeover = None
                current = state.runner(s)
                if current is not None:
                    key, entry = current
                    tracker.retain([key])
                    tracker.observe(key, state.marker(entry), float(entry.get("ttlSeconds", 0)))
                    if not tracker.expired(key) or not entry.get("ttlSeconds"):
                        expires = tracker.expires_at(key)
                        delay = None if expires is None else expires - client.clock.monotonic()
                        await wait_any(changed, delay=delay)
                        continue
                    takeover = (key, state.marker(entry))
                ran, latest = await self._claim_and_run(client, ns, fn, obj, takeover)
                if ran:
                    return self._outcome(ns, state.normalize(latest.spec, latest.status))

    def _outcome(self, ns: str, s: state.Status) -> Any:
        if s["phase"] == state.DONE:
            return json.loads(s["result"])
        error = s.get("error") or {}
        raise OnceFailed(
            f"once {ns}/{self.name} failed in {s.get('completedBy', '?')}: "
            f"{error.get('type', 'Error')}: {error.get('message', '')}"
        )

    async def _claim_and_run(
        self,
        client: Client,
        ns: str,
        fn: Callable[[], Awaitable[Any]],
        obj: KObject,
        takeover: tuple[str, Any] | None,
    ) -> tuple[bool, KObject]:
        """Claim, run, record. Returns whether this caller recorded the (successful)
        outcome, and the newest object it saw; raises :class:`OnceFailed` if it recorded
        a failure."""
        key = client.identity.new_key()
        entry = new_entry(client, self._ttl)
        now = rfc3339(client.clock.now())
        try:
            claimed = await self._cas(
                client,
                ns,
                lambda o: state.claim(
                    o.spec, o.status, key=key, entry=entry, now=now, takeover=takeover
                ),
                current=obj,
            )
        except BaseException:
            # The claim may have been written even though we never saw the answer.
            with anyio.CancelScope(shield=True):
                await self._release(client, ns, key, None)
            raise
        if not claimed.wrote:
            return False, claimed.object
        self._ran += 1
        self._took_over += int(takeover is not None)
        attempt = int(claimed.object.status["holders"][key]["attempt"])
        renewal = Renewal(
            client=client,
            kind=ONCE,
            namespace=ns,
            name=self.name,
            path=("status", "holders", key),
            expect={"holder": entry["holder"], "attempt": attempt},
            ttl_seconds=self._ttl,
            # The claim was invisible to everyone before its write was sent.
            last_ok_sent=claimed.sent if claimed.sent is not None else client.clock.monotonic(),
        )
        try:
            done, value, error = await self._run_renewed(fn, renewal)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(client, ns, key, attempt)
            raise
        if not done:
            # The claim was lost mid-run; whoever runs next records the outcome.
            return False, claimed.object
        return await self._record(client, ns, key, attempt, value, error, entry["holder"])

    async def _release(self, client: Client, ns: str, key: str, attempt: int | None) -> None:
        """Give up the claim ``key`` if it is still ours (bounded; never raises), so that
        another caller may run at once instead of after the TTL."""
        with anyio.move_on_after(_CLEANUP_SECONDS):
            try:
                fresh = await client.store.get(ONCE, ns, self.name)
                await self._cas(
                    client,
                    ns,
                    lambda o: state.release(o.spec, o.status, key=key, attempt=attempt),
                    current=fresh,
                )
            except APIError as exc:
                log.warning("%r: could not release the claim (it will expire): %s", self, exc)

    async def _run_renewed(
        self, fn: Callable[[], Awaitable[Any]], renewal: Renewal
    ) -> tuple[bool, Any, BaseException | None]:
        """Run ``fn`` while renewing; ``(False, ...)`` if the claim was lost (and ``fn``
        was cancelled), else ``(True, value, None)`` or ``(True, None, exception)``."""
        lost: list[str] = []
        value: Any = None
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as body:

                def on_lost(reason: str) -> None:
                    lost.append(reason)
                    body.cancel()

                tg.start_soon(renewal.run, on_lost)
                try:
                    value = await fn()
                except Exception as exc:
                    error = exc
            tg.cancel_scope.cancel()
        if lost and body.cancelled_caught:
            log.warning("%r: lost the claim while running (%s); fn was cancelled", self, lost[0])
            return False, None, None
        return True, value, error

    async def _record(
        self,
        client: Client,
        ns: str,
        key: str,
        attempt: int,
        value: Any,
        error: BaseException | None,
        holder: str,
    ) -> tuple[bool, KObject]:
        text = ""
        if error is None:
            try:
                text = json.dumps(value, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                error = exc
            else:
                if len(text.encode()) > state.MAX_RESULT_BYTES:
                    error = ConfigurationError(
                        f"the result is {len(text.encode())} bytes of JSON, more than "
                        f"{state.MAX_RESULT_BYTES}"
                    )
        now = rfc3339(client.clock.now())
        if error is None:
            done = await self._cas(
                client,
                ns,
                lambda o: state.complete(
                    o.spec,
                    o.status,
                    key=key,
                    attempt=attempt,
                    result=text,
                    holder=holder,
                    now=now,
                ),
            )
            return done.wrote, done.object
        message = str(error) or repr(error)
        failed = await self._cas(
            client,
            ns,
            lambda o: state.fail(
                o.spec,
                o.status,
                key=key,
                attempt=attempt,
                error_type=type(error).__name__,
                message=message,
                holder=holder,
                now=now,
            ),
        )
        if not failed.wrote:
            return False, failed.object
        raise OnceFailed(
            f"once {ns}/{self.name} failed in {holder}: {type(error).__name__}: {message}"
        ) from error

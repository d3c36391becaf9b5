"""Once: run a function once per name across the cluster; everyone gets its outcome.

::

    once = Once("init-db")
    schema_version = await once.run(migrate)   # one caller runs migrate(); all get its value

The first caller to claim the Once (a CAS write of one runner entry naming its session)
runs the function; the others watch. The outcome (the JSON value, or the error) is recorded
once and returned to every caller, now and later. If the runner dies, its session ends: the
operator removes the entry and another caller runs the function again (a caller of the
same user does not need the operator: it judges the runner's session on its own clock). A
runner whose session is lost cancels the function before anyone may take over. So the
*recorded outcome* is exactly one; the function itself may start again after a crash (make
it idempotent, or fence it with :attr:`OnceStatus.attempts`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, final

import anyio
import attrs

from konductor_sdk._engines.once import RunnerJudge, run_while_alive
from konductor_sdk._kernel.cas import CasResult, ensure_exists, update_status
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import APIError, ConfigurationError, NotFoundError, OnceFailed
from konductor_sdk._kernel.objects import ONCE, KObject
from konductor_sdk._kernel.sessions import sessions_of
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._kernel.validate import check_ttl
from konductor_sdk._kernel.waiting import newest, wait_any
from konductor_sdk._machines import once as state
from konductor_sdk._object_front import ObjectFront

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
    """The running process (``Identity.holder``), while one runs."""
    result: Any
    error_type: str | None
    error_message: str | None
    started_at: str | None
    completed_at: str | None
    completed_by: str | None
    runner_session: str | None = None
    """The runner's Session (it runs as long as that session lives)."""
    runner_creator: str | None = None
    """The API server's user name of the runner."""

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
            runner_session=str(current[1].get("session", "")) if current else None,
            runner_creator=str(current[1].get("creator", "")) if current else None,
        )


@final
@attrs.frozen
class OnceStatistics:
    """What this :class:`Once` instance has done.

    Attributes:
        ran: times this instance ran the function (including runs cut short).
        took_over: claims that replaced a runner whose session this instance judged dead.
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
        ttl: seconds the runner's session lives without renewal (how long a crashed runner
            delays the others).

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
        self._ttl = check_ttl(ttl)
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
        runner still running loses its claim). ``False`` if there was nothing to forget.

        Only the Once's creator (or a user allowed ``override``) may forget a recorded
        outcome or remove another user's runner.
        """
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
            user = await client.whoami()
            latest: KObject | None = None
            async with RunnerJudge(client, ns) as judge:
                while True:
                    changed = watch.next_change(self.name, ns)
                    obj = newest(watch.get(self.name, ns), latest)
                    if obj is None:
                        obj = await ensure_exists(client, ONCE, ns, self.name, {})
                    s = state.normalize(obj.spec, obj.status)
                    if s["phase"] in (state.DONE, state.FAILED):
                        self._waited += 1
                        return self._outcome(ns, s)
                    takeover: Hashable | None = None
                    current = state.runner(s)
                    if current is not None:
                        key, entry = current
                        session = str(entry.get("session", ""))
                        # Only the runner's creator may remove its entry (the admission
                        # policy): others wait for the operator to reap a dead runner.
                        if entry.get("creator") != user or not session:
                            await wait_any(changed)
                            continue
                        if not await judge.dead(session, changed):
                            continue
                        takeover = state.marker(key, entry)
                    ran, latest = await self._claim_and_run(client, ns, fn, obj, user, takeover)
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
        user: str,
        takeover: Hashable | None,
    ) -> tuple[bool, KObject]:
        """Claim, run, record. Returns whether this caller recorded the (successful)
        outcome, and the newest object it saw; raises :class:`OnceFailed` if it recorded
        a failure."""
        session = await sessions_of(client).get(self._ttl)
        key = client.identity.new_key()
        now = rfc3339(client.clock.now())
        entry = {
            "session": session.name,
            "creator": user,
            "holder": client.identity.holder,
            "acquiredAt": now,
        }
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
        attempt = int(claimed.object.status["holders"][key]["attempt"])
        if session.lost:
            # Never run under a session whose deadline passed: give the claim back.
            with anyio.CancelScope(shield=True):
                await self._release(client, ns, key, attempt)
            return False, claimed.object
        self._ran += 1
        self._took_over += int(takeover is not None)
        try:
            done, value, error = await run_while_alive(fn, session)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(client, ns, key, attempt)
            raise
        if not done:
            log.warning("%r: the runner's session was lost while running; fn was cancelled", self)
            with anyio.CancelScope(shield=True):
                await self._release(client, ns, key, attempt)
            return False, claimed.object
        return await self._record(client, ns, key, attempt, value, error, entry["holder"])

    async def _release(self, client: Client, ns: str, key: str, attempt: int | None) -> None:
        """Give up the claim ``key`` if it is still ours (bounded; never raises), so that
        another caller may run at once instead of after the session's TTL."""
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
                log.warning("%r: could not release the claim (its session will): %s", self, exc)

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

"""Sessions: one liveness record per client (and TTL), shared by everything it holds.

Every permit, queued claim, barrier arrival and Once run of a client names a
:class:`Session` object instead of carrying a TTL of its own. The client renews the session
(one small write every ``ttl/3``, however many participants it has); the operator deletes a
session that was not renewed for ``ttlSeconds`` on *its own* monotonic clock, or whose pod
is gone, and then reaps everything that names it. Renewing never conflicts (nobody else
writes the object) and wakes nobody (no client watches sessions).

**The owner gives up first.** A session's deadline is the *send* time of its last
successful write (the create, or a renewal) plus ``ttl`` minus a safety margin. An observer
starts its stopwatch only when it *sees* a renewal, which is after it was sent, so the
owner's deadline always passes before any observer may call the session expired, whatever
the wall clocks say (client-go's leader election makes the same argument). A session whose
deadline passed is lost for good, even if a late renewal then succeeds: ``lost`` compares the
monotonic clock with the deadline itself, so it turns true the instant the deadline passes,
not when a background task notices. Whatever was granted under it is lost with it; the next
acquisition gets a fresh session.

Sessions are created lazily (the first acquisition pays one write) and deleted when the
client closes, unless something acquired under them is still held (a detached
``koncli semaphore acquire``): those are left to expire, so the operator reaps the holdings.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable
from typing import Any, Final, final

import anyio

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import APIError, InvalidObjectError, NotFoundError
from konductor_sdk._kernel.objects import POD, SESSION, KObject
from konductor_sdk._kernel.retry import backoff

log = logging.getLogger("konductor_sdk.session")

DEFAULT_TTL: Final = 30
MIN_RENEW_INTERVAL: Final = 0.05
CLOSE_SECONDS: Final = 5.0
"""Longest :meth:`Sessions.aclose` spends deleting idle sessions (they expire anyway)."""


def safety_margin(ttl: float) -> float:
    """How much earlier than ``ttl`` an owner gives up: 10%, at least 0.2 s, at most 5 s."""
    return min(max(ttl * 0.1, 0.2), 5.0)


@final
class Session:
    """One liveness record of this client, as the client sees it.

    Attributes:
        name: the Session object's name.
        uid: its uid (a recreated object of the same name is not this session).
        ttl: seconds; 0 means "as long as the pod" (no renewals, no deadline).
    """

    def __init__(self, client: Client, obj: KObject, ttl: int, sent: float) -> None:
        self._client = client
        self.name = obj.name
        self.namespace = obj.namespace
        self.uid = obj.uid
        self.ttl = ttl
        self.last_ok_sent = sent
        self.renew_count = 0
        self.holds = 0
        """Grants taken under this session and not yet given back (kept open on close)."""
        self._lost_reason: str | None = None
        self._lost = anyio.Event()
        self._callbacks: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        state = f"lost: {self.lost_reason}" if self.lost else f"deadline in {self.remaining:.1f}s"
        return f"<Session {self.name} ttl={self.ttl} {state}>"

    @property
    def deadline(self) -> float:
        """Monotonic time after which nothing held under this session may be trusted."""
        if self.ttl <= 0:
            return math.inf
        return self.last_ok_sent + self.ttl - safety_margin(self.ttl)

    @property
    def remaining(self) -> float:
        return self.deadline - self._client.clock.monotonic()

    @property
    def lost(self) -> bool:
        """True once the session ended: marked lost, or its deadline passed (checked now)."""
        if self._lost_reason is None and self._client.clock.monotonic() >= self.deadline:
            self.mark_lost(f"not renewed within its ttl ({self.ttl}s)")
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        self.lost  # noqa: B018 - refreshes the deadline check
        return self._lost_reason

    async def wait_lost(self) -> None:
        """Return when the session is lost (at its deadline at the latest)."""
        clock = self._client.clock
        while not self.lost:
            with anyio.move_on_after(max(0.0, min(self.deadline - clock.monotonic(), 0.5))):
                await self._lost.wait()

    def on_lost(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(reason)`` once when the session is marked lost; returns a remover.

        Deadlines are not pushed: a caller that must react at the deadline itself waits with
        :meth:`wait_lost` (or reads :attr:`lost`). Callbacks must not block.
        """
        if self._lost_reason is not None:
            callback(self._lost_reason)
            return lambda: None
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def mark_lost(self, reason: str) -> None:
        if self._lost_reason is not None:
            return
        self._lost_reason = reason
        self._lost.set()
        for callback in list(self._callbacks):
            try:
                callback(reason)
            except Exception:  # one broken callback must not keep the others from hearing
                log.exception("%r: on_lost callback failed", self)
        self._callbacks.clear()

    def fields(self) -> dict[str, Any]:
        """What a participant records about its session: the name (and the TTL, for humans)."""
        return {"session": self.name}


@final
class Sessions:
    """The sessions of one client, one per TTL in use, created on first need."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._by_ttl: dict[tuple[int, str], Session] = {}
        self._all: list[Session] = []
        self._locks: dict[tuple[int, str], anyio.Lock] = {}
        client._add_close_hook(self.aclose)

    def __repr__(self) -> str:
        return f"<Sessions {sorted(self._by_ttl)}>"

    def current(self, ttl: int, namespace: str | None = None) -> Session | None:
        """The live session of ``ttl`` if there is one (no I/O)."""
        session = self._by_ttl.get((ttl, namespace or self._client.namespace))
        return session if session is not None and not session.lost else None

    async def get(self, ttl: int = DEFAULT_TTL, namespace: str | None = None) -> Session:
        """A live session with ``ttl`` seconds (0: pod-bound), created if needed.

        ``namespace`` (default: the client's) is where it lives: a participant and its
        session must be in one namespace (claims are owned by their session).

        A session about to reach its deadline is still returned: callers check
        :attr:`Session.lost` after their own write, which is what counts.
        """
        await self._client.connect()
        ns = namespace or self._client.namespace
        session = self.current(ttl, ns)
        if session is not None:
            return session
        lock = self._locks.setdefault((ttl, ns), anyio.Lock())
        async with lock:
            session = self.current(ttl, ns)
            if session is None:
                session = await self._create(ttl, ns)
                self._by_ttl[(ttl, ns)] = session
                self._all = [s for s in self._all if not s.lost or s.holds] + [session]
        return session

    async def _create(self, ttl: int, namespace: str) -> Session:
        client = self._client
        identity = client.identity
        spec: dict[str, Any] = {
            "holder": identity.holder,
            "ttlSeconds": ttl,
            "renewCount": 0,
            "renewedAt": rfc3339(client.clock.now()),
        }
        metadata: dict[str, Any] = {
            "generateName": _name_prefix(identity.holder),
            "namespace": namespace,
        }
        pod = identity.pod
        if pod is not None:
            spec["pod"] = pod.to_dict()
            if pod.uid and pod.namespace == namespace:
                # Kubernetes' garbage collector then deletes the session with its pod (in a
                # real cluster; the operator does the same without one).
                metadata["ownerReferences"] = [
                    {"apiVersion": "v1", "kind": POD.kind, "name": pod.name, "uid": pod.uid}
                ]
        elif ttl == 0:
            raise ValueError("a session with ttl 0 needs a pod")
        sent = client.clock.monotonic()
        obj = await client.store.create(SESSION, namespace, {"metadata": metadata, "spec": spec})
        session = Session(client, obj, ttl, sent)
        if ttl > 0:
            client.spawn(self._renew, session)
        return session

    async def _renew(self, session: Session) -> None:
        client = self._client
        every = max(session.ttl / 3.0, MIN_RENEW_INTERVAL)
        failures = 0
        while not session.lost:
            now = client.clock.monotonic()
            due = session.last_ok_sent + every - now
            wait = due if failures == 0 else backoff(failures, base=0.1, cap=every)
            await anyio.sleep(max(0.0, min(wait, session.deadline - now)))
            remaining = session.deadline - client.clock.monotonic()
            if session.lost or remaining <= 0:
                session.lost  # noqa: B018 - marks it lost at the deadline
                break
            patch = [
                {"op": "test", "path": "/metadata/uid", "value": session.uid},
                {"op": "replace", "path": "/spec/renewCount", "value": session.renew_count + 1},
                {"op": "replace", "path": "/spec/renewedAt", "value": rfc3339(client.clock.now())},
            ]
            sent = client.clock.monotonic()
            try:
                with anyio.fail_after(remaining):
                    await client.store.patch(
                        SESSION, session.namespace, session.name, patch, patch_type="json"
                    )
            except (NotFoundError, InvalidObjectError) as exc:
                session.mark_lost(f"the session was deleted (reaped or its pod ended): {exc}")
                break
            except (APIError, TimeoutError) as exc:
                failures += 1
                log.debug("%r: renewal failed (%s), retrying", session, exc)
                continue
            failures = 0
            session.renew_count += 1
            if not session.lost:
                # Sent before the deadline: observers see the new count after this instant.
                session.last_ok_sent = sent
        if session.holds == 0:
            await self._delete(session)

    async def _delete(self, session: Session) -> None:
        # Gone already, or failing (or the event loop is shutting down, as at interpreter
        # exit): then the operator deletes it after its ttl.
        with (
            anyio.move_on_after(CLOSE_SECONDS, shield=True),
            contextlib.suppress(APIError, RuntimeError),
        ):
            await self._client.store.delete(
                SESSION, session.namespace, session.name, uid=session.uid
            )

    async def aclose(self) -> None:
        """Delete the sessions that hold nothing; leave the others to expire."""
        for session in self._all:
            if session.holds == 0:
                session.mark_lost("the client was closed")
                await self._delete(session)


_SLUG = re.compile(r"[^a-z0-9-]+")


def _name_prefix(holder: str) -> str:
    slug = _SLUG.sub("-", holder.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'session'}-"


def sessions_of(client: Client) -> Sessions:
    """The client's :class:`Sessions` (one per client, made on first use)."""
    found = client._extensions.get(Sessions)
    if found is None:
        found = client._extensions[Sessions] = Sessions(client)
    assert isinstance(found, Sessions)
    return found

"""WaitGroup: Go's ``sync.WaitGroup`` across the cluster.

::

    wg = WaitGroup("shards")
    await wg.add(3)          # the coordinator, before starting the workers
    ...
    await wg.done()          # each worker, when its part is finished
    await wg.wait()          # anyone: returns once the counter is zero

``add``/``done`` are CAS writes of ``status.counter``, a process's simultaneous changes
combined into one write (it can never go negative: that is a
:class:`~konductor_sdk.ConfigurationError` and nothing is written); ``wait`` watches. The
counter is bare, as in Go: a worker that dies before ``done()`` leaves it up, so bound your
waits with ``anyio.fail_after`` (or track workers with a Barrier, whose arrivals end with
their process's session). The counter is unowned: any user allowed to write waitgroups may
add and done (docs/security.md).
"""

from __future__ import annotations

from typing import final

import attrs

from konductor_sdk._engines.waitgroup import Change, counter_of
from konductor_sdk._kernel.cas import ensure_exists
from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.objects import WAITGROUP, KObject
from konductor_sdk._kernel.telemetry import span
from konductor_sdk._kernel.waiting import caught_up, newest, wait_any
from konductor_sdk._machines import waitgroup as state
from konductor_sdk._object_front import ObjectFront


@final
@attrs.frozen
class WaitGroupStatus:
    """A WaitGroup as read from the server."""

    name: str
    namespace: str
    counter: int
    epoch: int
    phase: str
    last_zero_at: str | None

    @classmethod
    def from_object(cls, obj: KObject) -> WaitGroupStatus:
        s = state.normalize(obj.spec, obj.status)
        return cls(
            obj.name, obj.namespace, s["counter"], s["epoch"], s["phase"], s.get("lastZeroAt")
        )


@final
@attrs.frozen
class WaitGroupStatistics:
    """What this :class:`WaitGroup` instance has done.

    Attributes:
        added: sum of the deltas this instance applied.
        waits: :meth:`WaitGroup.wait` calls that returned.
        writes: status writes this instance's changes were in (combined with its process's
            other changes at the same time); attempts: writes tried (lost races retried).
    """

    added: int
    waits: int
    writes: int
    attempts: int


@final
class WaitGroup(ObjectFront):
    """A cluster-wide counter to wait on.

    Args:
        name: the WaitGroup object's name.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.

    Raises:
        ConfigurationError: a bad name.
    """

    KIND = WAITGROUP

    def __init__(
        self, name: str, *, namespace: str | None = None, client: Client | None = None
    ) -> None:
        super().__init__(name, namespace=namespace, client=client)
        self._added = self._waits = self._writes = self._attempts = 0

    def __repr__(self) -> str:
        return f"<WaitGroup {self._namespace or '?'}/{self.name}>"

    def statistics(self) -> WaitGroupStatistics:
        """Counters of this instance (no I/O)."""
        return WaitGroupStatistics(self._added, self._waits, self._writes, self._attempts)

    async def add(self, delta: int = 1) -> int:
        """Add ``delta`` (may be negative) to the counter; creates the object if needed.

        Returns:
            The counter after the change.

        Raises:
            ConfigurationError: ``delta`` is not an integer, or the counter would become
                negative; nothing is written.
        """
        state.check_delta(delta)
        client, ns = await self._connect()
        await ensure_exists(client, WAITGROUP, ns, self.name, {})
        change = Change(delta)
        with span("waitgroup.add", waitgroup=self.name, namespace=ns, delta=delta):
            # Combined with this process's other changes; never ConflictExhausted.
            await counter_of(client, ns, self.name).apply(change)
        if change.cas is not None:
            self._attempts += change.cas.attempts
            self._writes += int(change.cas.wrote)
        self._added += delta
        return change.counter

    async def done(self) -> int:
        """``add(-1)``.

        Raises:
            ConfigurationError: the counter is already zero.
        """
        return await self.add(-1)

    async def wait(self) -> None:
        """Return once the counter is zero (or has been zero since this call started)."""
        client, ns = await self._connect()
        with span("waitgroup.wait", waitgroup=self.name, namespace=ns):
            await ensure_exists(client, WAITGROUP, ns, self.name, {})
            watch = await client.watch(WAITGROUP, ns)
            # A fresh read first: the shared watch may have been listing while this task
            # add()ed, and its view must not be older than what this task already did.
            latest: KObject | None = await client.store.get(WAITGROUP, ns, self.name)
            since: int | None = None
            while True:
                changed = watch.next_change(self.name, ns)
                cached = watch.get(self.name, ns)
                latest = caught_up(cached, latest)
                obj = newest(cached, latest)
                if obj is None:  # deleted while we waited: a new one starts at zero
                    obj = latest = await ensure_exists(client, WAITGROUP, ns, self.name, {})
                s = state.normalize(obj.spec, obj.status)
                if since is None:
                    since = s["epoch"]
                if state.released(s, since_epoch=since):
                    self._waits += 1
                    return
                await wait_any(changed)

    async def status(self) -> WaitGroupStatus:
        """The WaitGroup as the server (or the watch cache) has it now."""
        return WaitGroupStatus.from_object(await self._read())

"""The operator's scheduling: a timer heap for the next deadline and a deduplicating queue.

Neither scans all objects: the heap holds one live deadline per object (stale ones are
skipped when they surface), and the queue holds each object at most once however many
times it is marked dirty, like client-go's workqueue (an object re-marked while it is
being processed is queued again when processing ends, never processed twice at once).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar, final

import anyio

K = TypeVar("K", bound=Hashable)


@final
class TimerHeap(Generic[K]):
    """At most one deadline per key; the earliest is found in O(log n).

    Keys must be orderable (tuples of strings): equal deadlines are ordered by key, which
    spares a sequence number in each of 100,000 entries.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, K]] = []
        self._current: dict[K, float] = {}

    def __repr__(self) -> str:
        return f"<TimerHeap timers={len(self._current)}>"

    def __len__(self) -> int:
        return len(self._current)

    def schedule(self, key: K, when: float | None) -> bool:
        """Set (``None``: clear) the deadline of ``key``; True if it became the earliest."""
        old = self._current.get(key)
        if when is None:
            self._current.pop(key, None)
            return False
        if old == when:
            return False
        self._current[key] = when
        heapq.heappush(self._heap, (when, key))
        self._compact()
        return self._heap[0][1] == key and self._heap[0][0] == when

    def deadline(self, key: K) -> float | None:
        return self._current.get(key)

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is ``<= now``."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            when, key = heapq.heappop(self._heap)
            if self._current.get(key) == when:
                del self._current[key]
                due.append(key)
        return due

    def _drop_stale(self) -> None:
        while self._heap and self._current.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        # Rescheduling leaves stale tuples behind; rebuild when they outnumber live ones
        # so memory stays proportional to the number of objects.
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._current):
            self._heap = [(w, k) for w, k in self._heap if self._current.get(k) == w]
            heapq.heapify(self._heap)


@final
class WorkQueue(Generic[K]):
    """A FIFO of distinct keys; a key being processed is never handed out twice.

    Keys added as ``background`` (a periodic resync of every object) wait until no other
    key is queued: a resync of 1,000 objects must not delay a session that just expired.
    A background key added again without ``background`` moves to the front lane.
    """

    def __init__(self) -> None:
        self._order: deque[K] = deque()
        self._later: deque[K] = deque()
        self._queued: set[K] = set()
        self._background: set[K] = set()
        """Queued keys waiting in ``_later`` only."""
        self._processing: set[K] = set()
        self._redo: dict[K, bool] = {}
        """Keys re-marked while processed, and whether only in the background."""
        self._changed = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return (
            f"<WorkQueue queued={len(self._queued)} background={len(self._background)} "
            f"processing={len(self._processing)}>"
        )

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K, *, background: bool = False) -> None:
        """Mark ``key`` dirty (never blocks: safe from watch listeners)."""
        if key in self._processing:
            self._redo[key] = self._redo.get(key, True) and background
        elif key in self._queued:
            if not background and key in self._background:
                # Its stale place in _later is skipped when it comes up.
                self._background.discard(key)
                self._order.append(key)
        else:
            self._queued.add(key)
            if background:
                self._background.add(key)
                self._later.append(key)
            else:
                self._order.append(key)
            self._changed.set()
            if self._idle.is_set():
                self._idle = anyio.Event()

    async def get(self) -> K:
        """The next dirty key; call :meth:`done` with it when finished."""
        while True:
            if self._order:
                key = self._order.popleft()
                break
            if self._later:
                key = self._later.popleft()
                if key in self._background:
                    self._background.discard(key)
                    break
                continue  # moved to the front lane, and handed out from there
            if self._changed.is_set():
                self._changed = anyio.Event()
            await self._changed.wait()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._redo:
            self.add(key, background=self._redo.pop(key))
        elif self.idle():
            self._idle.set()

    def idle(self) -> bool:
        """Nothing queued and nothing being processed."""
        return not self._queued and not self._processing

    async def join(self) -> None:
        """Wait until the queue is :meth:`idle`."""
        while not self.idle():
            await self._idle.wait()

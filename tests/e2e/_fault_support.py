"""The fault tests' harness: child processes to freeze, waits, and the observer's checks.

Children (``_fault_child.py``) report to an event log and write to a fenced resource; the
checks below judge only those two records and the server's final state, never the SDK's
own account of what happened. Waiting on another process's report is a bounded poll of
the log file (there is no other signal from another process); waiting on objects uses the
SDK's watch.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
from _fault_child import EventLog, Fence
from _operator_support import watch_until

from konductor_sdk import Client
from konductor_sdk._kernel.objects import CLAIM, LEASE, SEMAPHORE, SESSION, KObject

CHILD = Path(__file__).with_name("_fault_child.py")
Event = dict[str, Any]


def _thread_states(pid: int) -> set[str]:
    states = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return set()
    for tid in tids:
        try:
            states.add(
                Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            )
        except (FileNotFoundError, IndexError):
            continue
    return states


@attrs.define
class Child:
    """A child process of a fault test, frozen and thawed with SIGSTOP/SIGCONT."""

    who: str
    proc: subprocess.Popen[bytes]
    stderr: Path
    faults: list[str] = attrs.Factory(list)  # the scene's record of faults put in

    def freeze(self) -> float:
        """SIGSTOP; returns (the monotonic time) once every thread is stopped."""
        self.faults.append(f"freeze {self.who}")
        os.kill(self.proc.pid, signal.SIGSTOP)
        return self.await_stopped()

    def await_stopped(self) -> float:
        self._await_states(lambda states: bool(states) and states <= {"T", "t"})
        return time.monotonic()

    def thaw(self) -> float:
        os.kill(self.proc.pid, signal.SIGCONT)
        self._await_states(lambda states: not states & {"T", "t"})
        return time.monotonic()

    def _await_states(self, done: Callable[[set[str]], bool]) -> None:
        deadline = time.monotonic() + 10
        while not done(_thread_states(self.proc.pid)):
            assert time.monotonic() < deadline, f"{self.who}: signal not delivered"
            time.sleep(0.001)

    async def exited(self, within: float) -> int:
        """Wait for the process to end; fail with its stderr if it takes longer."""
        try:
            return await anyio.to_thread.run_sync(lambda: self.proc.wait(within))
        except subprocess.TimeoutExpired:
            message = f"{self.who} still running after {within}s:\n{self.tail()}"
            raise AssertionError(message) from None

    def tail(self) -> str:
        try:
            return "\n".join(self.stderr.read_text().splitlines()[-30:])
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@attrs.define
class Scene:
    """One fault test's files and children."""

    kubeconfig: Path
    namespace: str
    directory: Path
    children: list[Child] = attrs.Factory(list)
    faults: list[str] = attrs.Factory(list)
    """The faults put in (freezes, kills, restarts), for :func:`summary`."""

    @property
    def log(self) -> Path:
        return self.directory / "events.jsonl"

    @property
    def fence(self) -> Path:
        return self.directory / "fence.jsonl"

    def spawn(self, role: str, who: str, name: str, *args: str) -> Child:
        stderr = self.directory / f"{who}.stderr"
        args = (*args, f"--pause-file={self.pause_file(who)}")
        command = [
            sys.executable,
            str(CHILD),
            role,
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            f"--name={name}",
            f"--identity={who}",
            f"--log={self.log}",
            f"--fence={self.fence}",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KONDUCTOR_"))}
        with stderr.open("wb") as err:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        child = Child(who, proc, stderr, self.faults)
        self.children.append(child)
        return child

    def holder(
        self, who: str, name: str, *, ttl: int, writes: int | None = None, release: bool = False
    ) -> Child:
        """A process that acquires ``name``, writes until released (or ``writes`` times)."""
        args = [f"--ttl={ttl}"]
        if writes is not None:
            args.append(f"--writes={writes}")
        if release:
            args.append(f"--release-file={self.release_file(who)}")
        return self.spawn("semaphore", who, name, *args)

    def pause_file(self, who: str) -> Path:
        return self.directory / f"pause-{who}"

    async def pause(self, child: Child) -> float:
        """Have ``child`` stop itself at the top of its body's next step (see
        ``_fault_child._pause_if_asked``); returns once it is stopped."""
        self.faults.append(f"pause {child.who}")
        self.pause_file(child.who).touch()
        await self.event(child.who, "pausing", within=30)
        return await anyio.to_thread.run_sync(child.await_stopped)

    def release_file(self, who: str) -> Path:
        return self.directory / f"release-{who}"

    def release(self, who: str) -> None:
        self.release_file(who).touch()

    def events(self, who: str | None = None, kind: str | None = None) -> list[Event]:
        return [
            e
            for e in EventLog.read(self.log)
            if (who is None or e["who"] == who) and (kind is None or e["kind"] == kind)
        ]

    async def event(self, who: str, kind: str, *, within: float, n: int = 1) -> Event:
        """The ``n``-th event ``kind`` of ``who``, waiting for it (a bounded poll)."""
        with anyio.fail_after(within):
            while len(found := self.events(who, kind)) < n:
                for child in self.children:
                    if child.who == who and child.proc.poll() is not None:
                        raise AssertionError(
                            f"{who} exited ({child.proc.returncode}) before {kind}:\n"
                            f"{child.tail()}\nevents: {self.events(who)}"
                        )
                await anyio.sleep(0.02)
        return found[n - 1]

    async def accepted_write(self, who: str, *, within: float) -> dict[str, Any]:
        """The first write of ``who`` that the fence accepted."""
        with anyio.fail_after(within):
            while True:
                for record in Fence(self.fence).records():
                    if record["writer"] == who and record["accepted"]:
                        return record
                await anyio.sleep(0.02)

    def kill_all(self) -> None:
        for child in self.children:
            child.kill()


# -- waiting on the server -----------------------------------------------------------------


@attrs.frozen
class Seen:
    """What the observer's watches show of one semaphore (object model v2, design.md): the
    object (its grants, keyed by first slot), its queue (one Claim per waiter) and the
    Sessions of the namespace (each participant's liveness).

    A participant is found by its identity: ``holder`` in a grant entry, ``spec.holder`` in
    a claim; its session by the name its grant or claim gives.
    """

    obj: KObject | None
    claims: tuple[KObject, ...]
    sessions: Mapping[str, KObject]

    @property
    def grants(self) -> list[dict[str, Any]]:
        if self.obj is None:
            return []
        return list((self.obj.status.get("holders") or {}).values())

    def grant(self, who: str) -> dict[str, Any] | None:
        """``who``'s grant (its entry in ``status.holders``), if it holds one."""
        return next((g for g in self.grants if g.get("holder") == who), None)

    def claim(self, who: str) -> KObject | None:
        """``who``'s Claim on the semaphore, if it waits (or was just granted and has not
        deleted its claim yet)."""
        return next((c for c in self.claims if c.spec.get("holder") == who), None)

    def waiting(self, who: str) -> bool:
        return self.claim(who) is not None and self.grant(who) is None

    def session(self, who: str) -> KObject | None:
        """The Session that ``who``'s grant (else its claim) names, while it exists."""
        grant, claim = self.grant(who), self.claim(who)
        if grant is not None:
            name = grant.get("session")
        elif claim is not None:
            name = claim.spec.get("session")
        else:
            return None
        return self.sessions.get(str(name))

    @property
    def empty(self) -> bool:
        """No grant and no claim left (the object exists)."""
        return self.obj is not None and not self.grants and not self.claims


async def _first(events: list[anyio.Event]) -> None:
    """Wait until one of ``events`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


async def until_semaphore(
    client: Client, name: str, predicate: Callable[[Seen], bool], *, within: float
) -> Seen:
    """Wait (on the observer's watches of semaphores, claims and sessions; no polling)
    until ``predicate`` holds for semaphore ``name``; returns what was seen then."""
    namespace = client.namespace
    with anyio.fail_after(within):
        semaphores = await client.watch(SEMAPHORE, namespace)
        claims = await client.watch(CLAIM, namespace)
        sessions = await client.watch(SESSION, namespace)
        while True:
            changed = [
                semaphores.next_change(name, namespace),
                claims.next_any_change(),
                sessions.next_any_change(),
            ]
            seen = Seen(
                semaphores.get(name, namespace),
                tuple(
                    c
                    for c in claims.objects()
                    if c.spec.get("target") == {"kind": SEMAPHORE.kind, "name": name}
                    and not c.deleting
                ),
                {s.name: s for s in sessions.objects() if not s.deleting},
            )
            if predicate(seen):
                return seen
            await _first(changed)


async def until_lease(
    client: Client, name: str, predicate: Callable[[KObject | None], bool], *, within: float
) -> KObject | None:
    with anyio.fail_after(within):
        return await watch_until(client, LEASE, client.namespace, name, predicate)


def lease_holders(obj: KObject | None) -> list[str]:
    """The holder names of a Lease's grant entries (at most one)."""
    if obj is None:
        return []
    return [str(e.get("holder")) for e in (obj.status.get("holders") or {}).values()]


async def until_candidate(client: Client, lease: str, who: str, *, within: float) -> None:
    """Wait until ``who`` waits in line for ``lease`` (its Claim exists)."""
    watch = await client.watch(CLAIM, client.namespace)
    with anyio.fail_after(within):
        while True:
            changed = watch.next_any_change()
            if any(
                c.spec.get("holder") == who and c.spec.get("target", {}).get("name") == lease
                for c in watch.objects()
            ):
                return
            await changed.wait()


async def renewed(client: Client, name: str, who: str, *, within: float) -> float:
    """Wait until the Session of ``who`` (the one its grant or claim on semaphore ``name``
    names) is renewed (its renewCount changes); returns when that was seen. The renewal
    was sent before then, so if ``who`` is frozen right away its deadline (``ttl`` minus a
    margin after that send) lies before the returned time + ttl, unless a later renewal
    was sent in the meantime (which only makes the deadline later).
    """
    seen = await until_semaphore(client, name, lambda s: s.session(who) is not None, within=within)
    session = seen.session(who)
    assert session is not None
    count = session.spec.get("renewCount")

    def renewed_since(s: Seen) -> bool:
        current = s.sessions.get(session.name)
        return current is not None and current.spec.get("renewCount") != count

    await until_semaphore(client, name, renewed_since, within=within)
    return time.monotonic()


# -- the checks ----------------------------------------------------------------------------


@attrs.define
class Body:
    """One critical-section body as the event log tells it."""

    who: str
    token: int
    start: Event
    writes: list[Event] = attrs.Factory(list)
    end: Event | None = None

    @property
    def last_act(self) -> float:
        """When it last acted: its start or its last write (ending is not an act)."""
        return max([self.start["t"], *(w["t"] for w in self.writes)])


def bodies(events: list[Event]) -> list[Body]:
    found: dict[tuple[str, int], Body] = {}
    for event in events:
        key = (event["who"], event.get("token", -1))
        if event["kind"] == "start":
            found[key] = Body(event["who"], event["token"], event)
        elif event["kind"] == "write":
            found[key].writes.append(event)
        elif event["kind"] == "end" and key in found:
            found[key].end = event
    return sorted(found.values(), key=lambda b: b.start["t"])


def violations(scene: Scene, *, exclusive: bool = True) -> list[str]:
    """Everything the observers saw that must not happen; empty when all is well.

    * no body starts on an expired grant, nor acts (writes) after its deadline: every
      ``start`` and ``write`` happened before ``permit.deadline`` as read at that moment
      (leaders: while ``is_leader``; the elector has no public deadline);
    * ``exclusive``: no two bodies overlap; a body spans from its start to its last act
      (a frozen body cannot report its end before it is thawed, but it must not act);
      tokens increase from one body to the next;
    * fencing: every write that reached the resource after a body with a higher token had
      started was rejected, and every write the resource rejected was such a stale write.
    """
    found: list[str] = []
    events = scene.events()
    all_bodies = bodies(events)
    for body in all_bodies:
        start = body.start
        if start.get("lost") or start.get("leading") is False:
            found.append(f"{body.who} token {body.token}: body started on a lost grant: {start}")
        for act in [start, *body.writes]:
            if "deadline" in act and act["deadline"] is not None and act["t"] > act["deadline"]:
                late = act["t"] - act["deadline"]
                found.append(
                    f"{body.who} token {body.token}: {act['kind']} {late:.3f}s after its "
                    f"deadline (lost={act.get('lost', False)})"
                )
    if exclusive:
        for earlier, later in itertools.pairwise(all_bodies):
            if earlier.last_act >= later.start["t"]:
                found.append(
                    f"{earlier.who} token {earlier.token} acted at {earlier.last_act:.3f} after "
                    f"{later.who} token {later.token} started at {later.start['t']:.3f}"
                )
            if earlier.token >= later.token:
                found.append(f"token {later.token} of {later.who} after {earlier.token}")
    starts = sorted((b.start["t"], b.token) for b in all_bodies)
    for record in Fence(scene.fence).records():
        newer = [token for t, token in starts if t < record["t"] and token > record["token"]]
        if newer and record["accepted"]:
            found.append(f"stale write accepted: {record} after token {max(newer)} started")
        if not newer and not record["accepted"]:
            found.append(f"legitimate write rejected: {record}")
    return found


def describe(scene: Scene) -> str:
    """The whole record, for assertion messages; runs of alike writes on one line."""
    events, records = scene.events(), Fence(scene.fence).records()
    base = min((e["t"] for e in events), default=0.0)
    lines = ["events (seconds since the first):"]
    run: list[Event] = []

    def flush() -> None:
        if run:
            first, last = run[0], run[-1]
            span = f"{first['t'] - base:8.3f}..{last['t'] - base:.3f}"
            keys = ("token", "deadline", "accepted")
            facts = {k: last[k] for k in keys if k in last}
            lines.append(f"  {span} {first['who']:>3} write x{len(run)} {facts}")
            run.clear()

    for event in events:
        if event["kind"] == "write" and (
            not run or (run[-1]["who"], run[-1]["accepted"]) == (event["who"], event["accepted"])
        ):
            run.append(event)
            continue
        flush()
        if event["kind"] == "write":
            run.append(event)
            continue
        rest = {k: v for k, v in event.items() if k not in {"who", "kind", "t"}}
        lines.append(f"  {event['t'] - base:8.3f} {event['who']:>3} {event['kind']:<11} {rest}")
    flush()
    rejected = [r for r in records if not r["accepted"]]
    lines.append(f"fence: {len(records)} writes, {len(rejected)} rejected:")
    lines += [f"  {r['t'] - base:8.3f} {r['writer']:>3} {r}" for r in rejected]
    return "\n".join(lines)


def children_output(scene: Scene) -> Iterator[str]:
    for child in scene.children:
        yield f"--- {child.who} (exit {child.proc.poll()}):\n{child.tail()}"


def summary(scene: Scene) -> dict[str, int]:
    """Totals of one scene, for the fault runs' figures (issue 13): bodies started, writes
    the fence accepted and refused, violations, and faults put in."""
    records = Fence(scene.fence).records()
    return {
        "bodies": len(scene.events(kind="start")),
        "writes_accepted": sum(1 for r in records if r["accepted"]),
        "writes_refused": sum(1 for r in records if not r["accepted"]),
        "saw_lost": len(scene.events(kind="saw-lost")),
        "permit_lost": len(scene.events(kind="permit-lost")),
        "violations": len(violations(scene)),
        "faults": len(scene.faults),
    }

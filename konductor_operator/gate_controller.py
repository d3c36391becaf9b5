"""The Gate controller: evaluates every gate's conditions and writes them into its status.

Data flow, all event-driven (no polling of referenced objects)::

    watch of Gates ───────────────► WorkQueue ◄── watch of each referenced (kind, namespace)
                                       │              (listener: gates naming that object)
    HTTP probe loops (if enabled) ─────┘
                                       ▼
                    reconcile(gate): judge each leaf from the watch caches,
                    one CAS writing changed leaf entries (apply_results + normalize)

Phase, ``met``, ``openedAt`` and failure are derived by the same pure
:func:`konductor_sdk._machines.gate.judge` the SDK uses; the timeout is the core
controller's (``KindRules.timer``/``on_timeout``). A gate waiter wakes on the watch event
of that one write. Referenced objects are read only after :class:`AccessGuard` allowed it
for the gate's verified creator, and watched only if the operator itself may (asked once
per ``--forbidden-log-interval``); CEL runs in a bounded pool of killable worker processes
served round-robin per gate; HTTP probes only when enabled, to allow-listed URL prefixes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, final

import aiohttp
import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from konductor_sdk._kernel.cas import update_status
from konductor_sdk._kernel.cel_eval import CelPool
from konductor_sdk._kernel.clock import rfc3339
from konductor_sdk._kernel.errors import APIError, ConflictExhausted, NotFoundError
from konductor_sdk._kernel.objects import GATE, KObject, ResourceKind
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk._machines import gate as state
from konductor_sdk._machines.gate import LeafResult
from konductor_sdk._machines.gate_spec import GateSpec, Leaf, SpecError, parse_spec, spec_hash

from ._context import OperatorContext
from ._gate_http import probe, refusal
from ._gate_refs import AccessGuard, KindResolver, Target, WatchPermissions, judge, target_of
from ._queue import WorkQueue

GateKey = tuple[str, str]  # (namespace, name)
WatchKey = tuple[ResourceKind, str | None]
ProbeKey = tuple[GateKey, str]

_ERROR_BACKOFF: Final = 2.0
# References whose watch never syncs (kind not served, operator not allowed) are retried
# at this pace by re-evaluating their gates; the watch itself retries on its own.
_UNSYNCED_RECHECK: Final = 5.0


@final
class GateController:
    """Evaluates the gates of the operator's namespaces (see the module docstring)."""

    def __init__(self, ctx: OperatorContext, *, install_policy: bool = True) -> None:
        self.ctx = ctx
        self.log: logging.Logger = ctx.logger
        self.queue: WorkQueue[GateKey] = WorkQueue()
        self.access = AccessGuard(ctx.client.store, ctx.clock)
        self.resolver = KindResolver(ctx.client.store, ctx.clock)
        self.permissions = WatchPermissions(
            ctx.client.store, ctx.clock, interval=ctx.config.forbidden_log_interval
        )
        self.install_policy = install_policy
        self._gate_watches: dict[str | None, KindWatch] = {}
        self._ref_watches: dict[WatchKey, KindWatch] = {}
        self._deps: dict[Target, set[GateKey]] = {}
        self._refs: dict[GateKey, set[Target]] = {}
        self._probes: dict[ProbeKey, tuple[str, anyio.CancelScope]] = {}
        self._probe_results: dict[ProbeKey, tuple[str, LeafResult]] = {}
        self._cel_results: dict[ProbeKey, tuple[tuple[str, str], LeafResult]] = {}
        self._removers: list[Callable[[], None]] = []
        self._tg: TaskGroup | None = None
        self._cel: CelPool | None = None
        self._session: aiohttp.ClientSession | None = None
        self.passes = 0
        self.writes = 0

    def __repr__(self) -> str:
        return (
            f"<GateController gates={len(self._refs)} watches={len(self._ref_watches)} "
            f"probes={len(self._probes)} {self.queue!r}>"
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled (the operator cancels it when leadership ends)."""
        ctx = self.ctx
        await ctx.client.connect()
        ctx.health.set_ready("gate", False)
        ok = await self.access.ensure_policy(install=self.install_policy)
        if not ok:
            self.log.warning(
                "gate creator policy not in force (%s): cross-namespace references refused",
                self.access.policy_error,
            )
        try:
            async with (
                CelPool(workers=ctx.config.cel_workers) as self._cel,
                aiohttp.ClientSession(trust_env=False) as self._session,
                anyio.create_task_group() as tg,
            ):
                self._tg = tg
                for ns in ctx.namespaces if ctx.namespaces is not None else (None,):
                    watch = ctx.client.start_watch(GATE, ns)
                    self._gate_watches[ns] = watch
                    self._removers.append(watch.add_listener(self._on_gate))
                    for obj in watch.objects():
                        self._on_gate("ADDED", obj)
                tg.start_soon(self._readiness)
                tg.start_soon(self._resync_loop)
                for _ in range(ctx.config.workers):
                    tg.start_soon(self._worker)
        finally:
            for remove in self._removers:
                remove()
            self._removers.clear()
            self._tg = None
            ctx.health.remove("gate")
            # The probe session closed its connections above; their transports finish
            # closing on the next loop iteration. Give them that iteration: a loop that
            # ends right after us would leave them to the garbage collector (an
            # "unclosed transport" ResourceWarning at some later, unrelated moment).
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()

    async def _readiness(self) -> None:
        for watch in self._gate_watches.values():
            await watch.synced.wait()
        self.ctx.health.set_ready("gate", True)
        self.log.info("gate controller ready", extra={"gates": len(self._refs)})

    async def _resync_loop(self) -> None:
        # Access decisions and the policy are cached; re-judge everything now and then so a
        # revoked permission or a removed policy takes effect without any gate changing.
        while True:
            await anyio.sleep(min(self.ctx.config.resync_seconds, 60.0))
            await self.access.refresh_policy()
            for key in list(self._refs):
                self.queue.add(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
            except (APIError, ConflictExhausted) as exc:
                self.log.warning("gate %s/%s: %s", *key, exc)
                self._later(key, _ERROR_BACKOFF)
            except Exception:
                self.log.exception("gate %s/%s: reconcile crashed", *key)
                self._later(key, _ERROR_BACKOFF)
            finally:
                self.queue.done(key)

    def _later(self, key: GateKey, delay: float) -> None:
        async def requeue() -> None:
            await anyio.sleep(delay)
            self.queue.add(key)

        if self._tg is not None:
            self._tg.start_soon(requeue)

    # -- watch listeners (synchronous, must not block) ----------------------------------------

    def _on_gate(self, etype: str, obj: KObject) -> None:
        key = (obj.namespace, obj.name)
        self.queue.add(key)
        # A gate may reference another gate: wake its dependants too.
        self._on_ref(GATE, obj)

    def _on_ref(self, kind: ResourceKind, obj: KObject) -> None:
        for key in self._deps.get(Target(kind, obj.namespace, obj.name), ()):
            self.queue.add(key)

    def _gate_obj(self, key: GateKey) -> KObject | None:
        watch = self._gate_watches.get(key[0]) or self._gate_watches.get(None)
        return watch.get(key[1], key[0]) if watch is not None else None

    # -- one gate --------------------------------------------------------------------------

    async def reconcile(self, key: GateKey) -> None:
        """Judge every leaf of gate ``key`` and write the changed entries in one CAS."""
        obj = self._gate_obj(key)
        if obj is None:
            self._forget(key)
            return
        self.passes += 1
        try:
            gs = parse_spec(obj.spec)
        except SpecError:
            self._set_refs(key, set())
            self._stop_probes(key, {})
            await self._write(obj, None, {})  # normalize() records InvalidSpec
            return
        if state.judge(obj)["phase"] == state.FAILED:
            # Failed is final for this spec: stop observing until the spec changes.
            self._set_refs(key, set())
            self._stop_probes(key, {})
            return
        await self.access.refresh_policy()
        results: dict[str, LeafResult] = {}
        targets: set[Target] = set()
        for leaf in gs.leaves:
            if leaf.type == "external":
                continue
            if leaf.type == "http":
                results[leaf.name] = self._probe_result(key, leaf)
                continue
            results[leaf.name] = await self._judge(obj, leaf, targets)
        self._set_refs(key, targets)
        self._stop_probes(key, {lf.name: lf.fingerprint for lf in gs.leaves if lf.type == "http"})
        await self._write(obj, gs, results)

    async def _judge(self, gate: KObject, leaf: Leaf, targets: set[Target]) -> LeafResult:
        try:
            target = await target_of(leaf, gate.namespace, self.resolver)
        except LookupError as exc:
            return LeafResult(False, str(exc))
        denied = await self.access.denied(gate, target)
        if denied is not None:
            return LeafResult(False, denied)
        targets.add(target)
        wkey: WatchKey = (target.kind, target.namespace or None)
        if wkey not in self._ref_watches and self.ctx.client.cached_watch(*wkey) is None:
            # Not watched yet: start a watch only if the operator may (else it would be
            # refused and retried forever); a refusal is re-checked once per interval.
            forbidden = await self.permissions.denied(target.kind, target.namespace)
            if forbidden is not None:
                return LeafResult(False, f"waiting for {target}: {forbidden}")
        watch = self._watch(target)
        if not watch.synced.is_set():
            error = watch.last_error
            why = f": {type(error).__name__}" if error is not None else ""
            return LeafResult(False, f"waiting for the operator's watch of {target}{why}")
        ref = watch.get(target.name, target.namespace)
        if leaf.type != "object":
            return judge(leaf, target, ref)
        if ref is None:
            return LeafResult(False, f"{target} not found")
        ckey = ((gate.namespace, gate.name), leaf.name)
        cached = self._cel_results.get(ckey)
        if cached is not None and cached[0] == (leaf.fingerprint, ref.resource_version):
            return cached[1]
        assert self._cel is not None
        outcome = await self._cel.evaluate(
            (gate.namespace, gate.name), str(leaf.params["expression"]), ref.raw
        )
        if outcome.error is not None:
            result = LeafResult(False, f"CEL error: {outcome.error}")
        else:
            result = LeafResult(bool(outcome.value), f"{target}: expression is {outcome.value}")
        self._cel_results[ckey] = ((leaf.fingerprint, ref.resource_version), result)
        return result

    def _watch(self, target: Target) -> KindWatch:
        namespace = target.namespace or None
        wkey: WatchKey = (target.kind, namespace)
        watch = self._ref_watches.get(wkey)
        if watch is not None:
            return watch
        client = self.ctx.client
        watch = client.cached_watch(target.kind, namespace) or client.start_watch(
            target.kind, namespace
        )
        self._ref_watches[wkey] = watch
        kind = target.kind
        if not any(watch is w for w in self._gate_watches.values()):  # else: _on_gate
            self._removers.append(watch.add_listener(lambda _t, o: self._on_ref(kind, o)))
        if not watch.synced.is_set() and self._tg is not None:
            self._tg.start_soon(self._await_sync, wkey, watch)
        return watch

    async def _await_sync(self, wkey: WatchKey, watch: KindWatch) -> None:
        while not watch.synced.is_set():
            with anyio.move_on_after(_UNSYNCED_RECHECK):
                await watch.synced.wait()
            for target, keys in list(self._deps.items()):
                if (target.kind, target.namespace or None) == wkey:
                    for key in keys:
                        self.queue.add(key)

    async def _write(
        self, obj: KObject, gs: GateSpec | None, results: dict[str, LeafResult]
    ) -> None:
        expected = gs.hash if gs is not None else spec_hash(obj.spec)
        now = rfc3339(self.ctx.clock.now())

        def mutate(fresh: KObject) -> dict[str, Any] | None:
            if fresh.uid != obj.uid or spec_hash(fresh.spec) != expected:
                return None  # a new object or spec: its own watch event re-queues it
            new = state.apply_results(
                fresh.spec, state.judge(fresh), results, generation=fresh.generation, now=now
            )
            return None if new == dict(fresh.status) else new

        try:
            result = await update_status(
                self.ctx.client, GATE, obj.namespace, obj.name, mutate, current=obj
            )
        except NotFoundError:
            return
        if result.wrote:
            self.writes += 1
            self.log.debug(
                "gate %s/%s: %s",
                obj.namespace,
                obj.name,
                result.object.status.get("message", ""),
            )

    # -- bookkeeping -----------------------------------------------------------------------

    def _set_refs(self, key: GateKey, targets: set[Target]) -> None:
        for target in self._refs.get(key, set()) - targets:
            keys = self._deps.get(target)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._deps[target]
        for target in targets:
            self._deps.setdefault(target, set()).add(key)
        self._refs[key] = targets

    def _forget(self, key: GateKey) -> None:
        self._set_refs(key, set())
        self._refs.pop(key, None)
        self._stop_probes(key, {})
        for ckey in [c for c in self._cel_results if c[0] == key]:
            del self._cel_results[ckey]

    # -- HTTP probes -----------------------------------------------------------------------

    def _probe_result(self, key: GateKey, leaf: Leaf) -> LeafResult:
        config = self.ctx.config
        refused = refusal(
            str(leaf.params["url"]),
            enabled=config.enable_http_probes,
            allowed=config.http_probe_prefixes,
        )
        if refused is not None:
            return LeafResult(False, refused)
        pkey = (key, leaf.name)
        running = self._probes.get(pkey)
        if (running is None or running[0] != leaf.fingerprint) and self._tg is not None:
            if running is not None:
                running[1].cancel()
            scope = anyio.CancelScope()
            self._probes[pkey] = (leaf.fingerprint, scope)
            self._tg.start_soon(self._probe_loop, pkey, leaf, scope)
        result = self._probe_results.get(pkey)
        if result is None or result[0] != leaf.fingerprint:
            return LeafResult(False, "probe has not answered yet")
        return result[1]

    async def _probe_loop(self, pkey: ProbeKey, leaf: Leaf, scope: anyio.CancelScope) -> None:
        assert self._session is not None
        with scope:
            while True:
                try:
                    result = await probe(self._session, leaf)
                except Exception as exc:  # a probe must never take the controller down
                    self.log.exception("gate %s/%s: probe %s failed", *pkey[0], leaf.name)
                    result = LeafResult(False, f"probe failed: {type(exc).__name__}")
                old = self._probe_results.get(pkey)
                if old is None or old != (leaf.fingerprint, result):
                    self._probe_results[pkey] = (leaf.fingerprint, result)
                    self.queue.add(pkey[0])
                await anyio.sleep(float(leaf.params["intervalSeconds"]))

    def _stop_probes(self, key: GateKey, keep: dict[str, str]) -> None:
        for pkey in [p for p in self._probes if p[0] == key]:
            fingerprint, scope = self._probes[pkey]
            if keep.get(pkey[1]) != fingerprint:
                scope.cancel()
                del self._probes[pkey]
                self._probe_results.pop(pkey, None)


async def run(ctx: OperatorContext) -> None:
    """The Gate controller, as a plug-in controller of the operator."""
    await GateController(ctx.with_logger("gate")).run()

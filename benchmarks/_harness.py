"""The benchmark harness: one local control plane per run, scenarios, repeats, reports.

A run starts ONE :class:`~konductor_sdk.testing.LocalControlPlane`, writes down the
hardware line (cores, Python, the server's ``/version``, etcd's fsync flag), then runs the
selected scenarios one after the other. Each scenario gets a fresh namespace and a
:class:`Context` that owns every client and child process it opens; each repeat runs
under a time cap, so a hung primitive costs a bounded time and is reported as an error,
never as a figure. Around every repeat the harness adds the CPU seconds the apiserver,
etcd and this process spent, which is what tells "the server is the limit" apart from
"our Python is the limit" on a 2-core machine where client and server share the cores.
"""

from __future__ import annotations

import contextlib
import cProfile
import datetime as dt
import functools
import json
import math
import os
import platform
import re
import secrets
import statistics
import sys
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, final

import anyio
import anyio.to_thread

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import ResourceKind
from konductor_sdk.testing import ClusterHandle, LocalControlPlane

from ._child import Child, spawn
from ._report import Measurement, Row, ScenarioResult, write_reports

if TYPE_CHECKING:
    from konductor_sdk.semaphore import Semaphore

WRITE_VERBS = ("put", "patch", "post", "delete")


class Scenario:
    """Base class of a benchmark scenario; one subclass per module in ``scenarios/``.

    Subclasses set the class attributes and implement :meth:`run_once`; :meth:`setup`
    and :meth:`teardown` bracket all repeats.
    """

    name: ClassVar[str]
    number: ClassVar[str]
    title: ClassVar[str]
    rows: ClassVar[tuple[Row, ...]]
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules that must be importable (primitives still being written)."""
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = ()
    """Kinds the server must serve (their CRDs are installed from ``crds/``)."""
    repeat_cap_s: ClassVar[tuple[float, float]] = (60.0, 120.0)
    """Seconds one repeat may take: (quick, full)."""
    default_repeat: ClassVar[tuple[int, int]] = (1, 5)
    """Repeats when ``--repeat`` is not given: (quick, full)."""
    in_quick_suite: ClassVar[bool] = True
    """Whether a plain ``--quick`` run includes it (naming it with ``--scenario`` always does)."""

    def unavailable(self) -> str | None:
        """Why this scenario cannot run in this checkout, or ``None``."""
        import importlib

        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return f"{module} is not importable ({exc})"
        return None

    async def setup(self, ctx: Context) -> None:
        """Prepare objects and processes shared by all repeats."""

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        raise NotImplementedError

    async def teardown(self, ctx: Context) -> None:
        """Undo :meth:`setup` (clients and children are closed by the context anyway)."""


@final
class Context:
    """What a scenario gets from the harness; owns the clients and children it opens."""

    def __init__(
        self,
        handle: ClusterHandle,
        namespace: str,
        *,
        quick: bool,
        log_dir: Path,
        name: str,
        server_pids: dict[str, int] | None = None,
    ) -> None:
        self.handle = handle
        self.server_pids = dict(server_pids or {})
        self.kubeconfig = handle.kubeconfig_path
        self.namespace = namespace
        self.quick = quick
        self.log_dir = log_dir
        self._name = name
        self._clients: list[Client] = []
        self._children: list[Child] = []

    def size(self, *, full: int, quick: int) -> int:
        """A loop bound: smaller under ``--quick``."""
        return quick if self.quick else full

    def seconds(self, *, full: float, quick: float) -> float:
        return quick if self.quick else full

    async def client(self, holder: str | None = None, namespace: str | None = None) -> Client:
        """A connected client with its own HTTP session and watches (like one process)."""
        holder = holder or f"bench-{len(self._clients)}-{secrets.token_hex(2)}"
        client = Client(
            kubeconfig=self.kubeconfig,
            namespace=namespace or self.namespace,
            identity=Identity(holder=holder),
        )
        self._clients.append(client)
        return await client.connect()

    async def user_client(self, user: str) -> Client:
        """A connected client of ``user``, allowed in this namespace exactly what the
        project's ``konductor-user`` role allows (as the SDK runs in a user's pod; the
        admin's writes take other paths through the authorizer and the policies)."""
        rules = konductor_user_rules()
        name = f"konductor-user-{user}"
        base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.namespace}"
        role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        subject = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
        rest = self.handle.rest()
        role = {"metadata": {"name": name}, "rules": rules}
        await anyio.to_thread.run_sync(lambda: rest.request("POST", f"{base}/roles", role))
        await anyio.to_thread.run_sync(
            lambda: rest.request(
                "POST",
                f"{base}/rolebindings",
                {"metadata": {"name": name}, "roleRef": role_ref, "subjects": [subject]},
            )
        )
        allowed = functools.partial(
            self.handle.wait_allowed,
            user,
            "create",
            "semaphores",
            group="sync.konductor.io",
            namespace=self.namespace,
        )
        await anyio.to_thread.run_sync(allowed)
        kubeconfig = await anyio.to_thread.run_sync(
            lambda: self.handle.mint_kubeconfig(user, namespace=self.namespace)
        )
        client = Client(
            kubeconfig=kubeconfig, namespace=self.namespace, identity=Identity(holder=user)
        )
        self._clients.append(client)
        return await client.connect()

    async def spawn(self, target: str, params: dict[str, Any], *, name: str) -> Child:
        """A child process running ``target`` (see :mod:`benchmarks._child`)."""
        base = {"kubeconfig": str(self.kubeconfig), "namespace": self.namespace}
        child = await spawn(
            target, {**base, **params}, name=f"{self._name}-{name}", log_dir=self.log_dir
        )
        self._children.append(child)
        return child

    def server_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the apiserver and etcd (subtract two readings)."""
        return {name: cpu_seconds(pid) for name, pid in self.server_pids.items()}

    async def server_counters(self) -> dict[str, float]:
        """The apiserver's own request and etcd counters (see :func:`server_counters`)."""
        return await anyio.to_thread.run_sync(server_counters, self.handle)

    async def request_seconds(self, resource: str) -> dict[str, tuple[float, float]]:
        """The apiserver's own time per verb on ``resource`` (see :func:`request_seconds`)."""
        return await anyio.to_thread.run_sync(request_seconds, self.handle, resource)

    async def new_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        return await anyio.to_thread.run_sync(self.handle.create_namespace, name)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            for child in self._children:
                await child.aclose()
            for client in self._clients:
                await client.aclose()
            self._children.clear()
            self._clients.clear()


async def per_size(
    ctx: Context,
    full: Sequence[int],
    quick: Sequence[int],
    one: Callable[[Measurement, int], Awaitable[None]],
) -> Measurement:
    """One repeat of a cost-vs-N scenario: ``one(m, n)`` for every size, the ``quick``
    ones under ``--quick`` (and a note saying so)."""
    m = Measurement()
    for n in quick if ctx.quick else full:
        await one(m, n)
    if ctx.quick:
        m.notes.append(f"--quick: N in {tuple(quick)} only")
    return m


async def cycle_round_trips(semaphore: Semaphore, count: int) -> list[float]:
    """``count`` sequential acquire + release cycles (no hold); each one's time in ms."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await (await semaphore.acquire()).release()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def konductor_user_rules() -> list[Any]:
    """The rules of the ``konductor-user`` ClusterRole, as deploy/ ships them."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "deploy" / "rbac" / "user-roles.yaml"
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == "konductor-user":
            return list(doc["rules"])
    raise RuntimeError(f"{path} has no konductor-user ClusterRole")


def request_counts(before: Counter[str], after: Counter[str]) -> dict[str, float]:
    """Requests made between two ``store.stats`` snapshots, in the units reports use.

    ``writes`` are all write requests sent, ``writes_ok`` those not answered with a 409
    (other failures are rare enough to ignore here); ``reads`` are GETs and LISTs (a watch
    is also a GET on the wire; it is counted apart).
    """
    delta = {k: after[k] - before[k] for k in set(after) | set(before)}
    watches = delta.get("watch_opened", 0)
    writes = sum(delta.get(v, 0) for v in WRITE_VERBS)
    return {
        "writes": writes,
        "writes_ok": writes - delta.get("conflict", 0),
        "reads": delta.get("get", 0) - watches,
        "conflicts": delta.get("conflict", 0),
        "watches_opened": watches,
        "watch_events": delta.get("watch_event", 0),
    }


def accumulate(total: dict[str, float], counts: dict[str, float]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0.0) + value


_RESOURCES = ("semaphores", "barriers", "leases", "configmaps", "mutexes", "gates", "onces")


def server_counters(handle: ClusterHandle) -> dict[str, float]:
    """Totals from the apiserver's ``/metrics`` for the resources benchmarks touch.

    ``etcd.<operation>`` counts what the apiserver asked of etcd: an ``update`` more than
    the successful writes clients saw means the apiserver retried its own optimistic
    write (``GuaranteedUpdate``) after losing a race. ``requests.<code>`` counts answers.
    Includes the apiserver's own periodic writes (its identity Lease), a few per minute.
    """
    text = _metrics_text(handle)
    if text is None:
        return {}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("etcd_requests_total{"):
            prefix = "etcd"
            label = "operation"
        elif line.startswith("apiserver_request_total{"):
            prefix = "requests"
            label = "code"
        else:
            continue
        labels, _, value = line.rpartition(" ")
        if not any(f'resource="{r}"' in labels for r in _RESOURCES):
            continue
        found = labels.split(f'{label}="', 1)[1].split('"', 1)[0]
        key = f"{prefix}.{found}"
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def request_seconds(handle: ClusterHandle, resource: str) -> dict[str, tuple[float, float]]:
    """The apiserver's own time answering requests on ``resource``, from its ``/metrics``
    (``apiserver_request_duration_seconds``, from reading the request to writing the
    answer): ``(seconds, count)`` by verb, ``PATCH/status`` for the status subresource.
    Subtract two readings with :func:`spent_ms` or :func:`mean_ms`."""
    text = _metrics_text(handle)
    if text is None:
        return {}
    totals: dict[str, tuple[float, float]] = {}
    name = "apiserver_request_duration_seconds_"
    for line in text.splitlines():
        if not line.startswith((name + "sum{", name + "count{")):
            continue
        labels, _, value = line.rpartition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("resource") != resource:
            continue
        key = fields.get("verb", "") + (
            f"/{fields['subresource']}" if fields.get("subresource") else ""
        )
        seconds, count = totals.get(key, (0.0, 0.0))
        if line.startswith(name + "sum{"):
            seconds += float(value)
        else:
            count += float(value)
        totals[key] = (seconds, count)
    return totals


def spent_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], key: str
) -> tuple[float, float]:
    """The time (ms) the apiserver spent on the ``key`` requests answered between two
    readings of :func:`request_seconds`, and how many there were."""
    seconds = after.get(key, (0.0, 0.0))[0] - before.get(key, (0.0, 0.0))[0]
    count = after.get(key, (0.0, 0.0))[1] - before.get(key, (0.0, 0.0))[1]
    return seconds * 1000, count


def mean_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], key: str
) -> float:
    """The mean time (ms) of the ``key`` requests answered between two readings of
    :func:`request_seconds`; NaN if there were none."""
    total, count = spent_ms(before, after, key)
    return total / count if count else math.nan


def _metrics_text(handle: ClusterHandle) -> str | None:
    """The apiserver's ``/metrics`` page, or None if it would not give it."""
    status, text = handle.rest().request("GET", "/metrics", timeout=30)
    return text if status == 200 and isinstance(text, str) else None


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from ``/proc/stat``: with
    other people's work on the same cores, this is what says a figure is noisy."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hardware(plane: LocalControlPlane) -> dict[str, Any]:
    """The hardware line and its parts; every value read from the machine or the server."""
    version = plane.handle.rest().expect("GET", "/version")
    etcd_port = plane.ports["etcd-client"]
    with urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/version", timeout=5) as r:
        etcd_version = json.loads(r.read()).get("etcdserver", "?")
    etcd_cmdline = Path(f"/proc/{plane.pids['etcd']}/cmdline").read_bytes().split(b"\0")
    no_fsync = any(
        arg.decode() in ("--unsafe-no-fsync=true", "--unsafe-no-fsync") for arg in etcd_cmdline
    )
    fsync = "off (--unsafe-no-fsync=true)" if no_fsync else "on (etcd default)"
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0))
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = f"{platform.python_implementation()} {platform.python_version()}"
    kube = str(version.get("gitVersion", "?"))
    line = (
        f"{cores} cores ({model}), {mem_gb:.0f} GiB RAM, Linux {platform.release()}; "
        f"{python}; Kubernetes {kube} (kube-apiserver), etcd {etcd_version}, "
        f"etcd fsync {fsync}; client and server share the cores, loopback only"
    )
    return {
        "line": line,
        "cores": cores,
        "cpu": model,
        "memory_gib": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": python,
        "kubernetes": kube,
        "etcd": etcd_version,
        "etcd_fsync": fsync,
        "loadavg_at_start": os.getloadavg(),
    }


async def run_scenario(
    scenario: Scenario,
    plane: LocalControlPlane,
    *,
    repeat: int | None,
    quick: bool,
    out_dir: Path,
    profile: bool,
) -> ScenarioResult:
    result = ScenarioResult(scenario.name, scenario.number, scenario.title, scenario.rows)
    reason = scenario.unavailable() or await anyio.to_thread.run_sync(
        _missing_kinds, plane.handle, scenario.requires_kinds
    )
    if reason is not None:
        result.status, result.reason = "not run", reason
        return result
    started = time.monotonic()
    namespace = f"bench-{scenario.name.replace('_', '-')}-{secrets.token_hex(3)}"
    await anyio.to_thread.run_sync(plane.handle.create_namespace, namespace)
    ctx = Context(
        plane.handle,
        namespace,
        quick=quick,
        log_dir=out_dir / "logs",
        name=scenario.name,
        server_pids=plane.pids,
    )
    cap = scenario.repeat_cap_s[0 if quick else 1]
    if repeat is None:
        repeat = scenario.default_repeat[0 if quick else 1]
    result.repeats_requested = repeat
    profiler = cProfile.Profile() if profile else None
    try:
        with anyio.fail_after(cap):
            await scenario.setup(ctx)
        for index in range(repeat):
            pids = plane.pids
            counters_before = await ctx.server_counters()
            cpu_before = {n: cpu_seconds(p) for n, p in pids.items()}
            machine_before = machine_ticks()
            own_before = time.process_time()
            wall = time.monotonic()
            try:
                if profiler is not None:
                    profiler.enable()
                with anyio.fail_after(cap):
                    measurement = await scenario.run_once(ctx, index)
            except Exception as exc:
                # Recorded next to the figures of the repeats that did finish. The scenario
                # stops here: its processes may be mid-protocol, and a further repeat
                # would only measure the wreckage (or burn another cap).
                result.errors.append(f"repeat {index}: {_describe(exc, cap)}")
                traceback.print_exc(file=sys.stderr)
                break
            finally:
                if profiler is not None:
                    profiler.disable()
            measurement.add("repeat_wall_s", time.monotonic() - wall, "s")
            measurement.add("cpu.bench_process_s", time.process_time() - own_before, "s")
            measurement.add("cpu.machine_busy", busy_percent(machine_before, machine_ticks()), "%")
            for n, p in pids.items():
                measurement.add(f"cpu.{n}_s", cpu_seconds(p) - cpu_before[n], "s")
            server = counter_delta(counters_before, await ctx.server_counters())
            for key, value in sorted(server.items()):
                measurement.add(f"server.{key}", value, "requests")
            result.repeats.append(measurement)
            print(f"  {scenario.name} repeat {index + 1}/{repeat} done", file=sys.stderr)
    except Exception as exc:
        result.errors.append(f"setup: {_describe(exc, cap)}")
        traceback.print_exc(file=sys.stderr)
    finally:
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await scenario.teardown(ctx)
        except Exception as exc:
            result.errors.append(f"teardown: {_describe(exc, cap)}")
        finally:
            await ctx.aclose()
    if profiler is not None:
        out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, after the scenario
        profiler.dump_stats(out_dir / f"profile-{scenario.name}.pstats")
    result.seconds = time.monotonic() - started
    busy = [m.metrics["cpu.machine_busy"] for m in result.repeats]
    if busy:
        result.notes.append(
            f"whole machine CPU busy during the repeats (anyone's work): median "
            f"{statistics.median(busy):.0f}%, max {max(busy):.0f}%"
        )
    if result.repeats:
        result.status = "ok"
        if len(result.repeats) < repeat:
            result.notes.append(
                f"only {len(result.repeats)} of {repeat} repeats finished (see errors)"
            )
    else:
        result.status, result.reason = "failed", "; ".join(result.errors)[:500]
    return result


def _missing_kinds(handle: ClusterHandle, kinds: Sequence[ResourceKind]) -> str | None:
    for kind in kinds:
        status, _ = handle.rest().request("GET", kind.path())
        if status != 200:
            return (
                f"the server does not serve {kind.plural}.{kind.group} (HTTP {status}): "
                "its CRD is not in crds/"
            )
    return None


def _describe(exc: BaseException, cap: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"did not finish within the {cap:g}s cap"
    return f"{type(exc).__name__}: {exc}"


async def run(
    scenarios: Sequence[Scenario],
    *,
    repeat: int | None,
    quick: bool,
    out_dir: Path,
    profile: bool,
    command: str,
    skip: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Path, Path]:
    """Run ``scenarios`` against one fresh control plane and write the reports; those named
    in ``skip`` are reported as not run, with the reason given there."""
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    wall = time.monotonic()
    async with LocalControlPlane() as plane:
        hw = await anyio.to_thread.run_sync(hardware, plane)
        print(f"hardware: {hw['line']}", file=sys.stderr)
        results: dict[str, Any] = {}
        for scenario in scenarios:
            print(f"scenario {scenario.number} {scenario.name}...", file=sys.stderr)
            if skip and scenario.name in skip:
                result = ScenarioResult(
                    scenario.name, scenario.number, scenario.title, scenario.rows
                )
                result.reason = skip[scenario.name]
                results[scenario.name] = result.to_json()
                continue
            result = await run_scenario(
                scenario, plane, repeat=repeat, quick=quick, out_dir=out_dir, profile=profile
            )
            results[scenario.name] = result.to_json()
            print(f"  -> {result.status} {result.reason}".rstrip(), file=sys.stderr)
        hw["loadavg_at_end"] = os.getloadavg()
    report = {
        "schema": 1,
        "started_at": started_at,
        "command": command,
        "quick": quick,
        "repeat": repeat,
        "seconds": time.monotonic() - wall,
        "hardware": hw,
        "scenarios": results,
    }
    json_path, md_path = write_reports(report, out_dir)
    return report, json_path, md_path

"""Running the operator as a separate process in e2e tests, and observing it.

The operator is started exactly as a user would (``python -m konductor_operator ...``) and
observed only from outside: its ``/metrics``/``/readyz`` endpoints and the API server.
Waiting on the operator's endpoints is a bounded poll (there is no other signal from
another process); waiting on objects uses the SDK's watch (event-driven).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio
import attrs
from prometheus_client.parser import text_string_to_metric_families

from konductor_sdk import Client, Permit
from konductor_sdk._kernel.objects import EVENT, KObject, ResourceKind
from konductor_sdk.testing._process import free_port

FAST_ELECTION = ("--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5")


@attrs.define
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:  # it holds the response (and its socket) open
                return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, metric_name: str, /, **labels: str) -> float | None:
        return self.metrics().get((metric_name, tuple(sorted(labels.items()))))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_operator(
    kubeconfig: Path,
    namespace: str,
    log_dir: Path,
    *,
    lease_name: str = "konductor-operator",
    identity: str | None = None,
    extra: Sequence[str] = (),
) -> OperatorProcess:
    """Start ``python -m konductor_operator`` managing ``namespace``; returns at once."""
    port = free_port()
    log_path = log_dir / f"operator-{identity or port}.log"
    args = [
        sys.executable,
        "-m",
        "konductor_operator",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(port),
        "--lease-name",
        lease_name,
        "--lease-namespace",
        namespace,
        *FAST_ELECTION,
        "--log-level",
        "DEBUG",
        *(("--identity", identity) if identity else ()),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KONDUCTOR_OPERATOR_"))}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    return OperatorProcess(proc, port, log_path)


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, op: OperatorProcess | None = None
) -> None:
    """Poll ``check`` (cheap, local) every 50 ms; fail with the operator's log tail."""
    deadline = time.monotonic() + timeout
    while not check():
        if op is not None and not op.alive():
            raise AssertionError(f"operator exited ({op.proc.returncode}):\n{op.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"\noperator log:\n{op.log_tail()}" if op is not None else ""
            raise AssertionError(f"timed out waiting for {what}{tail}")
        time.sleep(0.05)


async def await_until(
    check: Callable[[], bool], *, within: float, what: str, op: OperatorProcess | None = None
) -> None:
    """:func:`wait_until` for async tests (the checks run in a worker thread)."""
    await anyio.to_thread.run_sync(lambda: wait_until(check, timeout=within, what=what, op=op))


def ready_leader(op: OperatorProcess) -> bool:
    status, _ = op.get("/readyz")
    return status == 200 and op.metric("konductor_operator_leader") == 1.0


async def watch_until(
    client: Client,
    kind: ResourceKind,
    namespace: str,
    name: str,
    predicate: Callable[[KObject | None], bool],
) -> KObject | None:
    """Wait (on the shared watch, no polling) until ``predicate(object or None)``."""
    watch = await client.watch(kind, namespace)
    while True:
        changed = watch.next_change(name, namespace)
        obj = watch.get(name, namespace)
        if predicate(obj):
            return obj
        await changed.wait()


async def wait_for_event(
    client: Client, namespace: str, involved: str, reason: str, text: str = ""
) -> KObject:
    """The first Event about ``involved`` with ``reason`` (and ``text`` in its message),
    waiting on the watch of Events (the operator writes them asynchronously)."""
    watch = await client.watch(EVENT, namespace)
    while True:
        changed = watch.next_any_change()
        for event in watch.objects():
            raw = event.raw
            if (
                raw.get("involvedObject", {}).get("name") == involved
                and raw.get("reason") == reason
                and text in str(raw.get("message", ""))
            ):
                return event
        await changed.wait()


def holds(obj: KObject | None, permit: Permit) -> bool:
    """Whether ``obj`` still has ``permit``'s grant: the entry under its first slot, with its
    fencing token (a later grant of the same slot has another token)."""
    if obj is None:
        return False
    holders = obj.status.get("holders")
    entry = holders.get(str(permit.slot)) if isinstance(holders, Mapping) else None
    return isinstance(entry, Mapping) and entry.get("token") == permit.token


def logged(op: OperatorProcess, text: str) -> bool:
    """Whether the operator's log has a line containing ``text``."""
    try:
        return text in op.log_path.read_text()
    except OSError:
        return False

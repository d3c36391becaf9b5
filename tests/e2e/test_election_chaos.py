"""Leader election with candidates as real processes: random ``kill -9`` and graceful exits
under an independent checker (``benchmarks/election_soak.py``; its long run is the soak).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from konductor_sdk import Client
from konductor_sdk._kernel.claims import claim_queue
from konductor_sdk._kernel.objects import LEASE

REPO = Path(__file__).resolve().parents[2]


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "election_soak", REPO / "benchmarks" / "election_soak.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("election_soak", module)
    spec.loader.exec_module(module)
    return module


soak = _harness()


@pytest.mark.anyio
async def test_random_crashes_and_exits_never_overlap(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    config = soak.SoakConfig(candidates=4, duration=30.0, lease_duration=3, seed=None)
    report = await soak.run_soak(kubeconfig, namespace, config, tmp_path)
    print(report.summary())
    assert report.violations == [], report.summary()
    # A run that exercised nothing would prove nothing.
    assert len(report.intervals) >= 4, report.summary()
    assert report.crash_failovers, report.summary()
    assert report.graceful_handoffs, report.summary()


async def _lines(log: Path, kind: str, identity: str) -> dict[str, object]:
    path = anyio.Path(log)
    with anyio.fail_after(60):
        while True:
            text = await path.read_text() if await path.exists() else ""
            for raw in text.splitlines():
                line = json.loads(raw)
                if line["kind"] == kind and line["identity"] == identity:
                    return dict(line)
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_leader_process_exiting_gracefully_hands_over_at_once(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    # An hour-long lease: the standby can only have got it because it was released.
    config = soak.SoakConfig(lease_duration=3600, renew_deadline=10.0, retry_period=2.0)
    log = tmp_path / "terms.jsonl"
    leader = soak._spawn(kubeconfig, namespace, config, log, "cand-a")
    standby: subprocess.Popen[bytes] | None = None
    try:
        await _lines(log, "start", "cand-a")
        standby = soak._spawn(kubeconfig, namespace, config, log, "cand-b")
        # cand-b waits in line: its Claim is there.
        async with (
            Client(kubeconfig=kubeconfig, namespace=namespace) as c,
            claim_queue(c, LEASE, soak.LEASE_NAME) as queue,
        ):
            with anyio.fail_after(60):
                while not any(q.spec.get("holder") == "cand-b" for q in queue.ordered()):
                    await queue.next_change().wait()
        leader.send_signal(signal.SIGTERM)
        b_start = await _lines(log, "start", "cand-b")
        a_end = await _lines(log, "end", "cand-a")
        assert leader.wait(30) == 0
        assert float(a_end["t"]) < float(b_start["t"])
        assert b_start["token"] == 2
    finally:
        for proc in (leader, standby):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)

"""A leader frozen past its lease (SIGSTOP), with a fenced resource as the outside observer.

Two candidate processes (``tests/e2e/_fenced_leader.py``) elect on one Lease and write to a
resource that fences by token (:class:`konductor_sdk.Fence`, kept in a file under
``flock``). The leader stops itself with SIGSTOP right after a write, as if the machine had
paused it between its check and its next write; the standby takes over once the lease has
expired on its clock and writes with a newer token; then the leader gets SIGCONT. On
resume, the leader's very first read of ``is_leader`` is false (it is read from the clock,
not from a background task that has not run yet), and the write it still sends with its
old token is refused by the resource.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

REPO = Path(__file__).resolve().parents[2]
CHILD = REPO / "tests" / "e2e" / "_fenced_leader.py"


def spawn(
    kubeconfig: Path, namespace: str, who: str, tmp: Path, *extra: str
) -> subprocess.Popen[bytes]:
    stderr = (tmp / f"{who}.stderr").open("wb")
    try:
        args = [str(kubeconfig), namespace, who, str(tmp / "log.jsonl"), str(tmp / "resource")]
        return subprocess.Popen(
            [sys.executable, str(CHILD), *args, *extra],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    finally:
        stderr.close()


async def lines(tmp: Path) -> list[dict[str, Any]]:
    path = anyio.Path(tmp / "log.jsonl")
    text = await path.read_text() if await path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


async def until_logged(tmp: Path, who: str, kind: str, **fields: Any) -> dict[str, Any]:
    with anyio.fail_after(60):
        while True:
            for line in await lines(tmp):
                if (line["who"], line["kind"]) == (who, kind) and fields.items() <= line.items():
                    return line
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_frozen_leader_is_not_leader_on_resume_and_its_stale_write_is_fenced(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    freeze = tmp_path / "freeze-now"
    a = spawn(kubeconfig, namespace, "a", tmp_path, str(freeze))
    b: subprocess.Popen[bytes] | None = None
    try:
        a_started = await until_logged(tmp_path, "a", "started")
        b = spawn(kubeconfig, namespace, "b", tmp_path)
        await until_logged(tmp_path, "b", "ready")
        freeze.touch()
        await until_logged(tmp_path, "a", "freezing")
        # a is stopped now, holding a lease it can no longer renew. b takes over after the
        # lease expired on b's clock, and writes.
        b_started = await until_logged(tmp_path, "b", "started")
        await until_logged(tmp_path, "b", "write", result="accepted")
        a.send_signal(signal.SIGCONT)
        resumed = await until_logged(tmp_path, "a", "resumed")
        await until_logged(tmp_path, "a", "stopped")
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    log = await lines(tmp_path)
    assert resumed["is_leader"] is False
    assert b_started["token"] > a_started["token"]
    after = log[log.index(resumed) + 1 :]
    a_writes = [line for line in after if line["who"] == "a" and line["kind"] == "write"]
    assert [w["result"] for w in a_writes] == ["fenced"]
    # The resource's own record: a's writes, then only b's, tokens never going down.
    state = json.loads((tmp_path / "resource").read_text())
    writers = [(w["who"], w["token"]) for w in state["writes"]]
    first_b = next(i for i, (who, _) in enumerate(writers) if who == "b")
    assert all(who == "a" for who, _ in writers[:first_b])
    assert all(who == "b" for who, _ in writers[first_b:])
    assert [t for _, t in writers] == sorted(t for _, t in writers)

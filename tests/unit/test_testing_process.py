"""Child-process hygiene without a control plane: ``sleep``/``sh`` children stand in."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from konductor_sdk.testing._process import ManagedProcess, free_port, log_tail, port_is_free


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in {"Z", "X"}


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def test_stop_terminates_and_reaps(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", ["sleep", "30"], tmp_path / "log")
    assert process.running
    process.stop(grace=5)
    assert not process.running
    assert not _alive(process.pid)
    process.stop()  # idempotent


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    script = "trap '' TERM; echo ready; while true; do sleep 0.05; done"
    process = ManagedProcess("stubborn", ["sh", "-c", script], tmp_path / "log")
    for _ in range(100):  # wait until the trap is installed
        if "ready" in log_tail(tmp_path / "log"):
            break
        time.sleep(0.02)
    process.stop(grace=0.3)
    assert process.returncode == -9


def test_children_outlive_the_thread_that_asked_for_them(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits; children are forked by a
    # long-lived spawner thread, so a short-lived caller thread must not take them down.
    made: list[ManagedProcess] = []
    caller = threading.Thread(
        target=lambda: made.append(ManagedProcess("s", ["sleep", "30"], tmp_path / "log"))
    )
    caller.start()
    caller.join()
    try:
        time.sleep(0.2)  # give a (wrongly) delivered SIGKILL time to land
        assert made[0].running
    finally:
        made[0].stop()


def test_output_goes_to_the_log(tmp_path: Path) -> None:
    process = ManagedProcess("echo", ["sh", "-c", "seq 1 50"], tmp_path / "log")
    for _ in range(500):
        if not process.running:
            break
        time.sleep(0.01)
    assert process.returncode == 0
    assert log_tail(tmp_path / "log", lines=2) == "49\n50"
    assert log_tail(tmp_path / "missing") == ""


def test_port_probes() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_is_free(port)
    assert port_is_free(port)

"""``make demo`` keeps working: the README's first command runs the demo end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


@pytest.mark.timeout(240)
def test_demo_runs_and_never_over_grants() -> None:
    # The demo starts its own control plane, like a user's first run.
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=220, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    peak = re.search(r"held at once, seen by the watcher: (\d+)", result.stdout)
    assert peak is not None, result.stdout
    assert 1 <= int(peak.group(1)) <= 2
    assert result.stdout.count("released (arrival index") == 4
    assert result.stdout.count("is the leader") == 3
    assert "Unclosed" not in result.stderr

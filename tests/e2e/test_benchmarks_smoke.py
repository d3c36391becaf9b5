"""The benchmark harness end to end: ``python -m benchmarks`` on its cheapest scenario.

Benchmarks print figures and are not pass/fail; this only proves the command runs (its own
control plane, a scenario, both reports) and that the JSON keeps the shape readers and
docs/performance.md rely on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_raw_patch_writes_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--scenario",
            "raw_patch",
            "--repeat",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert {"schema", "started_at", "command", "quick", "repeat", "seconds", "hardware"} <= set(
        report
    )
    hardware = report["hardware"]
    assert {"line", "cores", "python", "kubernetes", "etcd", "etcd_fsync"} <= set(hardware)
    assert hardware["kubernetes"].startswith("v1.")
    assert list(report["scenarios"]) == ["raw_patch"]
    scenario = report["scenarios"]["raw_patch"]
    assert scenario["status"] == "ok", scenario
    assert scenario["repeats"] == 1
    p50 = scenario["metrics"]["patch_ms.p50"]
    assert set(p50) == {"median", "min", "max", "values", "unit"}
    assert p50["unit"] == "ms"
    assert p50["median"] > 0
    # One PATCH is one write: the request counters the analysis relies on are wired up.
    assert scenario["metrics"]["requests_per_patch.writes"]["median"] == 1.0
    assert {"label", "metric", "value", "unit"} <= set(scenario["comparisons"][0])
    assert "| B1 |" in (out / "results.md").read_text()

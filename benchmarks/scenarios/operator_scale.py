"""Scenario 7: operator scale — delegated to ``benchmarks/operator_scale.py``.

That script belongs to the operator's owner: N participants (a session each, and a grant or
a queued claim naming it) on semaphores of 100, of which some die; the operator's RSS and
the expiry lag (session expiry → session, grant and claim gone). The harness runs it
against its own control plane — ``python -m benchmarks.operator_scale --kubeconfig <admin>
--out <out>/operator-scale.json`` plus sizes — and records the numeric fields of the JSON
it writes. Full size is the issue's 100,000 participants (about 15 minutes on 2 cores);
``--quick`` runs 1,000.

If the module exposes ``SCENARIO`` (a :class:`benchmarks._harness.Scenario`) the harness
runs that instead. Without the script the scenario is reported as "not run".
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any, ClassVar, final

import anyio

from .._child import REPO_ROOT
from .._harness import Context, Scenario
from .._report import Measurement, Row

SCRIPT = REPO_ROOT / "benchmarks" / "operator_scale.py"


def _delegate() -> Scenario | None:
    """The script's own ``SCENARIO``, if it has one and imports cleanly."""
    import importlib

    if not SCRIPT.exists():
        return None
    try:
        module = importlib.import_module("benchmarks.operator_scale")
    except Exception:
        # Someone else's work in progress: the subprocess form will report the error.
        return None
    scenario = getattr(module, "SCENARIO", None)
    return scenario if isinstance(scenario, Scenario) else None


QUICK_ARGS = shlex.split("-n 1000")
FULL_ARGS = shlex.split("-n 100000")  # the size


def _unit(key: str) -> str:
    if "rss_mib" in key:
        return "MiB"
    if "cpu_percent" in key:
        return "% of one core"
    if "lag_seconds" in key or "seconds" in key:
        return "s"
    return ""


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


@final
class OperatorScale(Scenario):
    name: ClassVar[str] = "operator_scale"
    number: ClassVar[str] = "7"
    title: ClassVar[str] = "Operator scale (benchmarks/operator_scale.py)"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("participants", "participants"),
        Row("time to load them", "load_seconds"),
        Row("operator RSS with them all", "rss_mib_loaded", "rss_mib_empty", "RSS empty"),
        Row("operator RSS peak", "rss_mib_peak"),
        Row("operator RSS peak after a restart (lists everything)", "restart_rss_mib_peak"),
        Row("expiry lag (expiry → session, grant, claim gone) p50", "lag_seconds.p50"),
        Row("expiry lag p99", "lag_seconds.p99"),
        Row("expiry lag max", "lag_seconds.max"),
        Row("expiring participants not removed within max lag", "not_removed_within_max_lag"),
    )
    default_repeat: ClassVar[tuple[int, int]] = (1, 1)
    in_quick_suite: ClassVar[bool] = False  # its own control of time: ~1 min even when small
    repeat_cap_s: ClassVar[tuple[float, float]] = (300.0, 2400.0)

    def unavailable(self) -> str | None:
        if not SCRIPT.exists():
            return "benchmarks/operator_scale.py does not exist (owned by the operator work)"
        return None

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        out = ctx.log_dir.parent / f"operator-scale-{repeat}.json"
        await anyio.Path(out.parent).mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "benchmarks.operator_scale"]
        command += ["--kubeconfig", str(ctx.kubeconfig), "--out", str(out)]
        command += QUICK_ARGS if ctx.quick else FULL_ARGS
        done = await anyio.run_process(command, cwd=REPO_ROOT, check=False)
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or ["?"]
            raise RuntimeError(f"operator_scale.py exited {done.returncode}: {lines[-1]}")
        report = json.loads(await anyio.Path(out).read_text())
        m = Measurement()
        for key, value in _flatten(report["runs"][-1]).items():
            m.add(key, value, _unit(key))
        shown = [*command[1:3], *(QUICK_ARGS if ctx.quick else FULL_ARGS)]
        m.notes.append(f"ran python {' '.join(shown)} (its JSON: {out.name})")
        return m


SCENARIO: Scenario = _delegate() or OperatorScale()

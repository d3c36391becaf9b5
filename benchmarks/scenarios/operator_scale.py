"""Scenario 7: operator scale — delegated to ``benchmarks/operator_scale.py``.

That script belongs to the operator's owner: N semaphores with M holders each that stop
renewing; the operator's RSS, idle CPU, and expiry lag (TTL end → entry removed). The
harness runs it against its own control plane — ``python -m benchmarks.operator_scale
--kubeconfig <admin> --out <out>/operator-scale.json`` plus sizes — and records the numeric
fields of the JSON it writes. Full size is the issue's 10,000 primitives x 10 holders =
100,000 holders with a 300 s TTL (about 8 minutes); ``--quick`` runs 100 x 10.

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


QUICK_ARGS = shlex.split("--primitives 100 --holders 10 --ttl 20 --idle 5 --max-lag 60 --drain 20")
# The size: 10,000 primitives x 10 holders = 100,000 holders. The TTL leaves room
# for loading them (~100 s on a quiet 2-core machine) and an idle window before expiry.
FULL_ARGS = shlex.split(
    "--primitives 10000 --holders 10 --ttl 300 --idle 20 --max-lag 180 --drain 120"
    " --event-rate 200 --event-burst 200 --concurrency 48"
)
LAG = "expiry_lag_seconds_vs_ack (lower bound)"
LAG_UPPER = "expiry_lag_seconds_vs_send (upper bound)"


def _unit(key: str) -> str:
    if "rss_mib" in key:
        return "MiB"
    if "cpu_percent" in key:
        return "% of one core"
    if "lag_seconds" in key or key.endswith("seconds"):
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
        Row("holder entries loaded (primitives x holders)", "entries"),
        Row("time to load them", "load_seconds"),
        Row("operator RSS with them all", "rss_mib_loaded", "rss_mib_empty", "RSS empty"),
        Row("operator RSS peak", "rss_mib_peak"),
        Row("operator CPU, idle with holders", "idle_with_holders.cpu_percent"),
        Row("operator CPU, idle after expiry", "idle_after_expiry.cpu_percent"),
        Row("expiry lag (TTL end → removed) p50, lower bound", f"{LAG}.p50"),
        Row("expiry lag p99, lower bound", f"{LAG}.p99"),
        Row("expiry lag p99, upper bound", f"{LAG_UPPER}.p99"),
        Row("operator status writes per reaped entry", "status_writes_per_reaped_entry"),
        Row("entries not removed within max lag", "not_removed_within_max_lag"),
    )
    default_repeat: ClassVar[tuple[int, int]] = (1, 1)
    in_quick_suite: ClassVar[bool] = False  # its own control of time: ~1 min even when small
    repeat_cap_s: ClassVar[tuple[float, float]] = (120.0, 1200.0)

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
        flat = _flatten(report)
        for key, value in flat.items():
            if not key.startswith("args."):
                m.add(key, value, _unit(key))
        if flat.get("operator_reaped_total"):
            per = flat.get("operator_status_writes", 0.0) / flat["operator_reaped_total"]
            m.add("status_writes_per_reaped_entry", per, "writes")
        shown = [*command[1:3], *(QUICK_ARGS if ctx.quick else FULL_ARGS)]
        m.notes.append(f"ran python {' '.join(shown)} (its JSON: {out.name})")
        return m


SCENARIO: Scenario = _delegate() or OperatorScale()

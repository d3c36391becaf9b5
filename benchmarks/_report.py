"""Measurements, their aggregation over repeats, and the JSON/markdown reports.

One repeat of a scenario yields a :class:`Measurement`: named scalar metrics (with units)
and latency series. Across repeats every metric is summarised by its median and range;
a series contributes its per-repeat p50/p99 as metrics and a pooled p50/p99. A
:class:`Row` pairs a metric with a baseline metric *measured in the same repeat*, and the
ratio reported is the median of the per-repeat ratios, so a noisy moment on the machine
moves both sides of one ratio instead of only one figure.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, final

import attrs

SCHEMA_VERSION = 1
_UNITS = {"conflicts": "409s", "watches_opened": "connections", "watch_events": "events"}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@final
@attrs.define
class Measurement:
    """What one repeat of a scenario measured."""

    metrics: dict[str, float] = attrs.field(factory=dict)
    units: dict[str, str] = attrs.field(factory=dict)
    series: dict[str, list[float]] = attrs.field(factory=dict)
    notes: list[str] = attrs.field(factory=list)

    def add(self, name: str, value: float, unit: str = "") -> None:
        self.metrics[name] = float(value)
        self.units[name] = unit

    def add_series(self, name: str, values: Iterable[float], unit: str = "ms") -> None:
        """A latency series; also records its p50, p99 and sample count as metrics."""
        data = [float(v) for v in values]
        self.series[name] = data
        self.units[name] = unit
        self.add(f"{name}.p50", percentile(data, 50), unit)
        self.add(f"{name}.p99", percentile(data, 99), unit)
        self.add(f"{name}.n", len(data), "samples")

    def add_counts(
        self, prefix: str, counts: Mapping[str, float], per: float, unit: str = "requests"
    ) -> None:
        """Request counters (see ``request_counts``) divided by ``per`` (cycles, grants...)."""
        for key, value in sorted(counts.items()):
            self.add(f"{prefix}.{key}", value / per if per else math.nan, _UNITS.get(key, unit))


@final
@attrs.frozen
class Row:
    """One line of the markdown table.

    Attributes:
        label: what the figure is, for humans.
        metric: the metric shown (its median over repeats, and its range).
        baseline: the metric of the same scenario it is compared with, if any.
        baseline_label: what the baseline is.
    """

    label: str
    metric: str
    baseline: str | None = None
    baseline_label: str = ""


def _summary(values: Sequence[float], unit: str) -> dict[str, Any]:
    finite = [v for v in values if not math.isnan(v)]
    return {
        "median": statistics.median(finite) if finite else None,
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
        "values": [round(v, 6) for v in values],
        "unit": unit,
    }


@final
@attrs.define
class ScenarioResult:
    """Everything recorded about one scenario in one run."""

    name: str
    number: str
    title: str
    rows: tuple[Row, ...]
    status: str = "not run"
    reason: str = ""
    repeats: list[Measurement] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)
    seconds: float = 0.0
    repeats_requested: int = 0

    def metric_values(self, name: str) -> list[float]:
        return [m.metrics.get(name, math.nan) for m in self.repeats]

    def unit(self, name: str) -> str:
        for m in self.repeats:
            if name in m.units:
                return m.units[name]
        return ""

    def _pooled(self, row: Row, series: Mapping[str, Any]) -> dict[str, Any]:
        """A row on percentiles of a series pooled over all repeats (for series with few
        samples per repeat); its ratio is of the pooled values."""

        def pooled(metric: str) -> tuple[float | None, str]:
            name, _, which = metric.rpartition(".")
            found = series.get(name, {})
            return found.get(which.removeprefix("pooled_")), found.get("unit", "")

        value, unit = pooled(row.metric)
        entry: dict[str, Any] = {"label": row.label, "metric": row.metric, "value": value}
        entry["unit"] = unit
        if row.baseline is not None:
            base, _ = pooled(row.baseline)
            entry |= {
                "baseline": row.baseline,
                "baseline_label": row.baseline_label,
                "baseline_value": base,
                "ratio": value / base if value is not None and base else None,
                "ratios": [],
            }
        return entry

    def to_json(self) -> dict[str, Any]:
        names = sorted({n for m in self.repeats for n in m.metrics})
        metrics = {n: _summary(self.metric_values(n), self.unit(n)) for n in names}
        series: dict[str, Any] = {}
        for n in sorted({n for m in self.repeats for n in m.series}):
            pooled = [v for m in self.repeats for v in m.series.get(n, [])]
            series[n] = {
                "n": len(pooled),
                "p50": percentile(pooled, 50),
                "p99": percentile(pooled, 99),
                "max": max(pooled) if pooled else None,
                "unit": self.unit(n),
            }
        comparisons = []
        for row in self.rows:
            if row.metric.split(".")[-1].startswith("pooled_"):
                comparisons.append(self._pooled(row, series))
                continue
            entry: dict[str, Any] = {
                "label": row.label,
                "metric": row.metric,
                "value": metrics.get(row.metric, {}).get("median"),
                "unit": self.unit(row.metric),
            }
            if row.baseline is not None:
                ratios = [
                    a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan
                    for a, b in zip(
                        self.metric_values(row.metric),
                        self.metric_values(row.baseline),
                        strict=True,
                    )
                ]
                finite = [r for r in ratios if not math.isnan(r)]
                entry |= {
                    "baseline": row.baseline,
                    "baseline_label": row.baseline_label,
                    "baseline_value": metrics.get(row.baseline, {}).get("median"),
                    "ratio": statistics.median(finite) if finite else None,
                    "ratios": [round(r, 6) for r in ratios],
                }
            comparisons.append(entry)
        return {
            "number": self.number,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "repeats": len(self.repeats),
            "repeats_requested": self.repeats_requested,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "notes": self.notes + sorted({n for m in self.repeats for n in m.notes}),
            "metrics": metrics,
            "series": series,
            "comparisons": comparisons,
        }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def _range(summary: Mapping[str, Any]) -> str:
    low, high = summary.get("min"), summary.get("max")
    if low is None or high is None or low == high:
        return ""
    return f" [{_fmt(low)}-{_fmt(high)}]"


def render_markdown(report: Mapping[str, Any]) -> str:
    """The results table, one row per compared figure."""
    hw = report["hardware"]
    repeats = (
        f"{report['repeat']} repeat(s) per scenario"
        if report["repeat"]
        else "each scenario's default number of repeats (the table's `n` column)"
    )
    lines = [
        f"# Konductor benchmarks — {report['started_at']}",
        "",
        f"**Hardware:** {hw['line']}",
        "",
        f"Command: `{report['command']}` — {repeats}, "
        f"{'quick' if report['quick'] else 'full'} sizes, {report['seconds']:.0f} s in all. "
        "Figures are medians over repeats with the [min-max] of the per-repeat values; "
        "ratios are medians of per-repeat ratios against a baseline measured in the same "
        "repeat.",
        "",
        "| # | Scenario | n | Figure | Konductor | Baseline (same run) | Ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in report["scenarios"].items():
        title = f"{result['title']} (`{name}`)"
        if result["status"] != "ok":
            reason = result["reason"] or "; ".join(result["errors"])
            reason = " ".join(reason.split()).replace("|", "/")[:300]
            lines.append(
                f"| {result['number']} | {title} | | — | {result['status']}: {reason} | | |"
            )
            continue
        metrics = result["metrics"]
        n = str(result["repeats"])
        for comparison in result["comparisons"]:
            value = metrics.get(comparison["metric"], {})
            cell = _fmt(comparison["value"], comparison["unit"]) + _range(value)
            base, ratio = "", ""
            if "baseline" in comparison:
                bsum = metrics.get(comparison["baseline"], {})
                base = (
                    f"{comparison['baseline_label']}: "
                    f"{_fmt(comparison['baseline_value'], bsum.get('unit', comparison['unit']))}"
                    f"{_range(bsum)}"
                )
                r = comparison["ratio"]
                ratio = "n/a" if r is None else f"x{r:.2f}"
            lines.append(
                f"| {result['number']} | {title} | {n} | {comparison['label']} | {cell} "
                f"| {base} | {ratio} |"
            )
            title, n = "", ""
    notes = [
        f"- `{name}`: {note}" for name, r in report["scenarios"].items() for note in r["notes"]
    ]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def write_reports(report: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    md_path = out_dir / "results.md"
    json_path.write_text(json.dumps(scrub_nan(report), indent=2, allow_nan=False))
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def scrub_nan(value: Any) -> Any:
    """NaN is not JSON; missing figures are ``null``."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: scrub_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_nan(v) for v in value]
    return value

"""The benchmarks' reading of the apiserver's own request times (``/metrics``)."""

from __future__ import annotations

import math
from typing import Any

from benchmarks._harness import mean_ms, request_seconds, spent_ms

LABELS = (
    'component="apiserver",group="sync.konductor.io",resource="{r}",subresource="{s}",verb="{v}"'
)


def metrics(**totals: tuple[float, float]) -> str:
    lines = [
        "# HELP apiserver_request_duration_seconds ...",
        'other_metric{resource="semaphores"} 9',
    ]
    for key, (seconds, count) in totals.items():
        resource, verb, subresource = key.split("__")
        labels = LABELS.format(r=resource, s=subresource, v=verb.upper())
        lines.append(f'apiserver_request_duration_seconds_bucket{{{labels},le="0.005"}} 1')
        lines.append(f"apiserver_request_duration_seconds_sum{{{labels}}} {seconds}")
        lines.append(f"apiserver_request_duration_seconds_count{{{labels}}} {count}")
    return "\n".join(lines) + "\n"


class Handle:
    def __init__(self, text: str) -> None:
        self.text = text

    def rest(self) -> Any:
        handle = self

        class Rest:
            def request(self, method: str, path: str, timeout: float = 10) -> tuple[int, str]:
                assert (method, path) == ("GET", "/metrics")
                return 200, handle.text

        return Rest()


def test_status_writes_and_patches_are_told_apart_per_resource() -> None:
    before = request_seconds(
        Handle(metrics(semaphores__patch__=(1.0, 100), semaphores__patch__status=(3.0, 300))),  # type: ignore[arg-type]
        "semaphores",
    )
    after = request_seconds(
        Handle(  # type: ignore[arg-type]
            metrics(
                semaphores__patch__=(1.3, 200),
                semaphores__patch__status=(3.8, 500),
                leases__patch__status=(50.0, 1),
            )
        ),
        "semaphores",
    )
    assert set(after) == {"PATCH", "PATCH/status"}
    total, count = spent_ms(before, after, "PATCH")
    assert math.isclose(total, 300.0)
    assert count == 100
    assert math.isclose(mean_ms(before, after, "PATCH"), 3.0)  # 0.3 s over 100 requests
    assert math.isclose(mean_ms(before, after, "PATCH/status"), 4.0)
    assert math.isnan(mean_ms(before, after, "GET"))

"""Start-up: ``koncli --help`` and ``import konductor_sdk`` as fresh processes.

No cluster needed; the figures are what ``benchmarks/startup.py`` prints, as a scenario so
they land in the same report as the rest (issue 14's targets: 150 ms and 200 ms medians).
"""

from __future__ import annotations

from typing import ClassVar, final

import anyio.to_thread

from .. import startup
from .._harness import Context, Scenario
from .._report import Measurement, Row


@final
class Startup(Scenario):
    name: ClassVar[str] = "startup"
    number: ClassVar[str] = "S1"
    title: ClassVar[str] = "Start-up: koncli --help, import konductor_sdk"
    rows: ClassVar[tuple[Row, ...]] = (
        Row("python -c pass (floor) p50", "floor_ms.p50"),
        Row("import konductor_sdk p50", "import_ms.p50"),
        Row("from konductor_sdk import Semaphore p50", "import_semaphore_ms.p50"),
        Row("koncli --help p50", "help_ms.p50"),
    )
    repeat_cap_s: ClassVar[tuple[float, float]] = (60.0, 120.0)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        runs = ctx.size(full=9, quick=5)
        series = {
            "floor_ms": "python -c pass (floor)",
            "import_ms": "import konductor_sdk",
            "import_semaphore_ms": "from konductor_sdk import Semaphore",
            "help_ms": "koncli --help",
        }
        m = Measurement()
        for key, command in series.items():
            argv = startup.COMMANDS[command]
            m.add_series(key, await anyio.to_thread.run_sync(startup.time_runs, argv, runs))
        return m


SCENARIO = Startup()

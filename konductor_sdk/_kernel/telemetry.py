"""OpenTelemetry spans; no-ops unless the application installs an SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

_tracer = trace.get_tracer("konductor_sdk")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span named ``konductor.<name>`` with ``konductor.*`` attributes (None dropped)."""
    attrs = {f"konductor.{k}": v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(f"konductor.{name}", attributes=attrs) as s:
        yield s

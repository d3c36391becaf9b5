"""Spans: nothing is built without a tracer provider, and one installed later gets them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from opentelemetry import trace

from konductor_sdk._kernel.telemetry import span


def test_without_a_provider_a_span_is_the_invalid_one_and_changes_no_context() -> None:
    before = trace.get_current_span()
    with span("probe", barrier="x") as s:
        assert s is trace.INVALID_SPAN
        assert trace.get_current_span() is before


PROGRAM = textwrap.dedent(
    """
    import contextlib
    from opentelemetry import trace
    from konductor_sdk._kernel.telemetry import span

    seen = []

    class Tracer(trace.Tracer):
        def start_span(self, name, *args, **kwargs):
            return trace.INVALID_SPAN

        @contextlib.contextmanager
        def start_as_current_span(self, name, *args, attributes=None, **kwargs):
            seen.append((name, dict(attributes or {})))
            yield trace.INVALID_SPAN

    class Provider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return Tracer()

    with span("before", barrier="b"):
        pass
    trace.set_tracer_provider(Provider())
    with span("barrier.wait", barrier="b", party=None):
        pass
    print(seen)
    """
)


def test_a_provider_installed_after_import_gets_the_spans() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[('konductor.barrier.wait', {'konductor.barrier': 'b'})]"

"""Diagnostic instrumentation of one process: request latency by verb, CAS back-off.

For profiling only (``python -m benchmarks.diagnose``), never in the figures of
``python -m benchmarks``: it wraps two private functions of the SDK —
``KubeStore._json`` (every non-watch request) and ``_cas.backoff`` (the sleep before a
compare-and-swap retry) — to add up where a client's time goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from konductor_sdk._kernel import cas as _cas
from konductor_sdk._kernel import store as _store

TOTALS: dict[str, float] = {}
_installed = False


def _add(key: str, value: float) -> None:
    TOTALS[key] = TOTALS.get(key, 0.0) + value


def install() -> None:
    """Wrap the two functions (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    original_json = _store.KubeStore._json

    async def timed_json(self: _store.KubeStore, method: str, path: str, **kw: Any) -> Any:
        verb = f"{method} status" if path.endswith("/status") else method
        started = time.perf_counter()
        try:
            return await original_json(self, method, path, **kw)
        finally:
            _add(f"{verb}.n", 1)
            _add(f"{verb}.s", time.perf_counter() - started)

    # cas imports backoff by name from retry: patching it in _cas affects only CAS retries.
    original_backoff: Callable[..., float] = _cas.backoff  # type: ignore[attr-defined]

    def counted_backoff(*args: Any, **kwargs: Any) -> float:
        delay = original_backoff(*args, **kwargs)
        _add("cas_backoff.n", 1)
        _add("cas_backoff.s", delay)
        return delay

    _store.KubeStore._json = timed_json  # type: ignore[method-assign]
    _cas.backoff = counted_backoff  # type: ignore[attr-defined]


def snapshot() -> dict[str, float]:
    return dict(TOTALS)


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}

"""Retry pacing shared by the store, the watches, CAS loops and renewals."""

from __future__ import annotations

import random


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff (AWS architecture blog's recommendation)."""
    return random.uniform(0, min(cap, base * 2**attempt))

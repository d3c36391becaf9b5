"""Bounds shared by the pure machines and the kernel's evaluators (no imports, no I/O)."""

from __future__ import annotations

from typing import Final

MAX_EXPRESSION: Final = 1024
"""Longest CEL expression a Gate may carry; parsing is linear, so this bounds its cost."""

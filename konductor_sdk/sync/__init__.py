"""Blocking twins of the async primitives, for scripts: ``with Semaphore("gpu"):``.

Every call runs the async implementation in one background event loop (see ``_portal``),
so semantics are identical; only the calling convention differs.
"""

__all__: list[str] = []

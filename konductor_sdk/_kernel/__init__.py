"""Kernel: the store seam (the only importer of kubernetes_asyncio), client, shared watches,
CAS, batching, sessions, entries, clock, identity, names, errors, telemetry.

Imports nothing from the layers above (machines, engines, facades).
"""

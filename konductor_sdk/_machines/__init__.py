"""Machines: each primitive's pure state functions and spec parsing.

Data in, data out: no I/O, no clock reads, no aiohttp/kubernetes_asyncio/anyio. Imports only
the kernel's data model (``objects``), ``errors``, ``names`` and ``clock``'s formatting.
"""

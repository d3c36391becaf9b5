"""Clients for integration tests: each test gets its own namespace (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from konductor_sdk import Client, Identity


@pytest.fixture
async def client(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    """A client in the test's namespace, as one process would have."""
    async with Client(kubeconfig=kubeconfig, namespace=namespace) as c:
        yield c


@pytest.fixture
async def make_client(kubeconfig: Path, namespace: str) -> AsyncIterator[Callable[..., Client]]:
    """Factory for more clients, each with its own identity, watches and HTTP session —
    what separate processes would have. All are closed at teardown."""
    made: list[Client] = []

    def factory(holder: str | None = None, **kwargs: object) -> Client:
        ident = Identity(holder=holder or f"test-holder-{len(made)}")
        kwargs.setdefault("kubeconfig", kubeconfig)
        kwargs.setdefault("namespace", namespace)
        c = Client(identity=ident, **kwargs)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield factory
    for c in made:
        await c.aclose()

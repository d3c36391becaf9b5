"""The doc tests: marked ``docs`` (select or deselect them with ``-m``), and ``e2e`` too where
they run processes against the control plane, like the tests under ``tests/e2e``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if not str(item.path).startswith(here):
            continue
        item.add_marker(pytest.mark.docs)
        if "control_plane" in getattr(item, "fixturenames", ()) or "pytest_blocks" in item.name:
            item.add_marker(pytest.mark.e2e)

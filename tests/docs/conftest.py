"""The doc tests: marked ``docs`` (select or deselect them with ``-m``), and ``e2e`` too where
they run processes against the control plane, like the tests under ``tests/e2e``.

They are also reordered for pytest-xdist, whose first batches are runs of consecutive tests:
the longest document first, then the quick checks, then the other documents and examples,
so that one worker is not handed the longest document and several others at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _cost(item: pytest.Item) -> int:
    """How many blocks and commands a test runs (0: a quick check)."""
    callspec = getattr(item, "callspec", None)
    module = getattr(item, "module", None)
    if getattr(item, "originalname", "") == "test_document" and callspec and module:
        return 1 + int(module.document_cost(callspec.params["path"]))
    if "control_plane" in getattr(item, "fixturenames", ()) and "data_block" not in item.name:
        return 1
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [index for index, item in enumerate(items) if HERE in item.path.parents]
    for index in ours:
        item = items[index]
        item.add_marker(pytest.mark.docs)
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
    costs = {id(items[i]): _cost(items[i]) for i in ours}
    slow = sorted((items[i] for i in ours if costs[id(items[i])]), key=lambda i: -costs[id(i)])
    quick = [items[i] for i in ours if not costs[id(items[i])]]
    for index, item in zip(ours, slow[:1] + quick + slow[1:], strict=True):
        items[index] = item

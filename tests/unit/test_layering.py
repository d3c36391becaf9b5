"""Architecture rules (kopf/import-linter style): cli → operator → primitives → store.

Checked on the import statements of every module, so a violation fails here rather than
in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The store seam is the only place that talks to kubernetes_asyncio (the client module
# builds the ApiClient from kubeconfig; the local control plane's helpers are test tooling).
K8S_ALLOWED = {"konductor_sdk/_kernel/store.py", "konductor_sdk/_kernel/client.py"}
K8S_ALLOWED_DIRS = ("konductor_sdk/testing/",)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # The package a module's relative imports start from: its directory, also for __init__.
    package = list(path.relative_to(ROOT).parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    "path", modules("konductor_sdk") + modules("konductor_operator"), ids=lambda p: p.name
)
def test_only_the_store_seam_imports_kubernetes_asyncio(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    if rel in K8S_ALLOWED or rel.startswith(K8S_ALLOWED_DIRS):
        return
    bad = {m for m in imports_of(path) if m.split(".")[0] == "kubernetes_asyncio"}
    assert not bad, f"{rel} imports {bad}; go through konductor_sdk._kernel.store"


@pytest.mark.parametrize("path", modules("konductor_sdk"), ids=lambda p: p.name)
def test_the_sdk_never_imports_the_operator_and_primitives_never_import_the_cli(
    path: Path,
) -> None:
    rel = path.relative_to(ROOT).as_posix()
    found = imports_of(path)
    assert not {m for m in found if m.startswith("konductor_operator")}, rel
    if not rel.startswith("konductor_sdk/cli/"):
        assert not {m for m in found if m.startswith("konductor_sdk.cli")}, rel


def test_every_machine_with_rules_is_registered_by_name() -> None:
    """The operator finds kinds through ``MACHINES``, not by file name: a machine module that
    defines ``RULES`` but is missing from the list would silently lose its operator."""
    from konductor_sdk._machines.rules import MACHINES

    defining = {
        path.stem
        for path in modules("konductor_sdk/_machines")
        if "register(" in path.read_text() and path.stem != "rules"
    }
    assert defining == set(MACHINES)

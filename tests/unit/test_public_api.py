"""The public API is exactly ``__all__``: nothing leaks, nothing is missing."""

from __future__ import annotations

import importlib
import types

import pytest

PUBLIC_MODULES = ["konductor_sdk", "konductor_sdk.sync", "konductor_sdk.testing"]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_and_matches_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations"}
    }
    assert public == set(exported)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_exported_names_have_docstrings(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type) or callable(value):
            assert value.__doc__, f"{module_name}.{name} has no docstring"


def test_errors_form_one_tree() -> None:
    import konductor_sdk as k

    for name in k.__all__:
        value = getattr(k, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, k.KonductorError), name
    assert issubclass(k.ConfigurationError, ValueError)
    assert issubclass(k.BarrierTimeout, k.BarrierFailed)

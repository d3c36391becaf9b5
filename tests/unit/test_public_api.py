"""The public API is exactly ``__all__``: nothing leaks, nothing is missing; public classes
are shown by their public path; the error tree drawn in the docs is the real one."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import types

import pytest

PUBLIC_MODULES = ["konductor_sdk", "konductor_sdk.sync", "konductor_sdk.testing"]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_and_matches_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    # dir(): konductor_sdk resolves its names lazily, so vars() lists only those used so far.
    public = {
        name
        for name in dir(module)
        if not name.startswith("_")
        and not isinstance(getattr(module, name), types.ModuleType)
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


@pytest.mark.parametrize("module_name", ["konductor_sdk", "konductor_sdk.sync"])
def test_public_names_show_public_module_paths(module_name: str) -> None:
    """Reprs and tracebacks say ``konductor_sdk.NotFoundError``, not a private path."""
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        owner = getattr(value, "__module__", None)
        if owner is None:
            continue
        assert not any(part.startswith("_") for part in owner.split(".")), (name, owner)
        assert getattr(importlib.import_module(owner), name) is value, (name, owner)


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_errors_and_client_are_public_even_when_imported_from_the_kernel() -> None:
    """The kernel raises its errors long before anyone touches ``konductor_sdk.X``."""
    out = run_python(
        "from konductor_sdk._kernel import errors, client\n"
        "print(sorted({getattr(errors, n).__module__ for n in errors.__all__}))\n"
        "print(client.Client.__module__, client.default_client.__module__)"
    )
    assert out.splitlines() == ["['konductor_sdk']", "konductor_sdk konductor_sdk"]


def test_import_is_lazy_and_the_http_stack_waits_for_a_client() -> None:
    out = run_python(
        "import sys, konductor_sdk\n"
        "print(sorted(m for m in sys.modules if m.startswith('konductor_sdk.')))\n"
        "from konductor_sdk import Semaphore, Client, NotFoundError\n"
        "print('aiohttp' in sys.modules, 'kubernetes_asyncio' in sys.modules)"
    )
    assert out.splitlines() == ["[]", "False False"]


def _drawn_tree(doc: str) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """``{class: (parent, (extra builtin bases...))}`` from the box drawing in ``doc``."""
    tree: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(?P<lead>[ │├└─]*)(?P<name>[A-Z]\w+)(?: \((?P<bases>[\w, ]+)\))?", line)
        if match is None or not line.startswith("    ") or match.group("name") == "Messages":
            continue
        depth = len(match.group("lead"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        bases = tuple(b.strip() for b in (match.group("bases") or "").split(",") if b.strip())
        tree[match.group("name")] = (stack[-1][1] if stack else None, bases)
        stack.append((depth, match.group("name")))
    return tree


def test_the_error_tree_drawing_matches_the_classes() -> None:
    from konductor_sdk._kernel import errors

    assert errors.__doc__ is not None
    drawn = _drawn_tree(errors.__doc__.split("::", 1)[1].split("\n\n", 2)[1])
    classes = {name: getattr(errors, name) for name in errors.__all__}
    assert set(drawn) == set(classes)
    for name, (parent, bases) in drawn.items():
        cls = classes[name]
        konductor_bases = [b for b in cls.__bases__ if b.__name__ in classes]
        assert [b.__name__ for b in konductor_bases] == ([parent] if parent else []), name
        builtin = tuple(b.__name__ for b in cls.__mro__ if b.__module__ == "builtins")
        for base in bases:
            assert base in builtin, (name, base)
        undrawn = {b.__name__ for b in cls.__bases__} - {parent, *bases, "Exception"}
        assert not undrawn, (name, undrawn)

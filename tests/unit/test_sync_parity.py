"""The blocking twins in ``konductor_sdk.sync`` match the async API they are made from.

Every public class of :mod:`konductor_sdk` with async members has a twin of the same name in
:mod:`konductor_sdk.sync` (or an entry in ``NO_TWIN``). For every public member of the async
class (methods, properties, instance and class attributes, ``__init__``, ``async with``) the
twin has one with the same parameter names, kinds, defaults and annotations, after the
blocking mapping, written out here independently of the generator:

* a coroutine method is a plain method returning what the coroutine returns;
* ``AbstractAsyncContextManager[T]`` is ``AbstractContextManager[T]``; ``AsyncIterator[T]``,
  ``AsyncIterable[T]`` and ``AsyncGenerator[T, ...]`` are ``Iterator[T]``; ``__aenter__`` is
  ``__enter__`` (with ``__exit__``); ``aclose`` is ``close``;
* a class with a twin is that twin, :class:`anyio.Event` is :class:`konductor_sdk.sync.Event`;
* a callback returning ``Awaitable[T]`` (or a coroutine of ``T``) returns ``T``.

Docstrings are equal after ``await x`` -> ``x``, ``async with``/``for`` -> ``with``/``for``
(whitespace aside). Every difference is listed in ``DEVIATIONS`` with its reason, and every
member only the twin has in ``EXTRAS``; entries that no longer apply fail too. Finally, the
checked-in generated modules are what ``python -m konductor_sdk.sync._generate`` writes.
"""

from __future__ import annotations

import ast
import collections.abc
import contextlib
import functools
import inspect
import operator
import re
import textwrap
import types
import typing
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import konductor_sdk
import konductor_sdk.sync as sync

# Public async classes without a blocking twin: name -> why.
NO_TWIN: dict[str, str] = {}

# Classes whose objects only the library makes (what acquire() returns): their constructors
# are not public API, so the twins have none.
LIBRARY_MADE = {"Permit", "HeldLease"}

# Where a twin deliberately differs: "Class[.member]:aspect" -> why.
DEVIATIONS = {
    "LeaderElector:doc": (
        "the blocking elector's callbacks run in worker threads and on_started_leading gets "
        "a Term, so its class docstring describes those instead of the async semantics"
    ),
    "LeaderElector.__init__:annotation:on_started_leading": (
        "a blocking callback cannot be cancelled when the term ends: it gets a Term (the "
        "token and a threading.Event set when the term ends) instead of the bare token"
    ),
    "LeaderElector.run:doc": (
        "the async run() ends when cancelled; the blocking one on stop() or Ctrl-C"
    ),
}

# Public members only the twin has: "Class.member" -> why.
EXTRAS = {
    "LeaderElector.stop": "makes a blocking run() return (the async one is cancelled instead)",
}

RENAMED = {"aclose": "close", "__aenter__": "__enter__"}


def has_async_members(cls: type) -> bool:
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
        for name, f in inspect.getmembers(cls)
        if not name.startswith("_") or name in ("__aenter__", "__aiter__")
    )


ASYNC_CLASSES = sorted(
    (
        value
        for name in konductor_sdk.__all__
        if inspect.isclass(value := getattr(konductor_sdk, name)) and has_async_members(value)
    ),
    key=lambda c: c.__name__,
)
TWINS: dict[type, type] = {
    cls: getattr(sync, cls.__name__) for cls in ASYNC_CLASSES if cls.__name__ in sync.__all__
}
used: set[str] = set()  # DEVIATIONS and EXTRAS entries that were needed


def deviates(key: str) -> bool:
    if key in DEVIATIONS or key in EXTRAS:
        used.add(key)
        return True
    return False


# --- the mapping ----------------------------------------------------------------------------


def blocking(t: Any) -> Any:
    """The blocking twin's spelling of the async annotation ``t``."""
    if isinstance(t, type):
        if t is anyio.Event:
            return sync.Event
        return TWINS.get(t, t)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is None or origin is typing.Literal:
        return t
    if origin is contextlib.AbstractAsyncContextManager:
        return contextlib.AbstractContextManager[blocking(args[0])]
    if origin in (
        collections.abc.AsyncIterator,
        collections.abc.AsyncIterable,
        collections.abc.AsyncGenerator,
    ):
        return collections.abc.Iterator[blocking(args[0])]
    if origin is collections.abc.Callable:
        params, ret = args
        if typing.get_origin(ret) in (collections.abc.Awaitable, collections.abc.Coroutine):
            ret = typing.get_args(ret)[-1]
        mapped = params if params is Ellipsis else [blocking(p) for p in params]
        return collections.abc.Callable[mapped, blocking(ret)]
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, [blocking(a) for a in args])
    return origin[tuple(a if a is Ellipsis else blocking(a) for a in args)]


def adapted(doc: str | None) -> str:
    doc = re.sub(r"\basync (with|for)\b", r"\1", doc or "")
    return " ".join(re.sub(r"\bawait\s+", "", doc).split())


def plain(doc: str | None) -> str:
    return " ".join((doc or "").split())


# --- reading members ------------------------------------------------------------------------


def instance_attributes(cls: type) -> set[str]:
    """Public attributes assigned to ``self`` in an ``__init__`` of ``cls`` or its bases,
    or declared on the class."""
    found: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            continue
        found |= {
            n
            for n, a in vars(klass).get("__annotations__", {}).items()
            if not n.startswith("_") and "ClassVar" not in str(a)
        }
        init = vars(klass).get("__init__")
        if not inspect.isfunction(init):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for t in targets:
                if (
                    isinstance(t, ast.Attribute)
                    and isinstance(t.value, ast.Name)
                    and t.value.id == "self"
                    and not t.attr.startswith("_")
                ):
                    found.add(t.attr)
    return found


def public_members(cls: type) -> dict[str, Any]:
    names = {n for n in dir(cls) if not n.startswith("_") and not hasattr(object, n)}
    if hasattr(cls, "__aenter__"):
        names.add("__aenter__")
    if cls.__name__ not in LIBRARY_MADE:
        names.add("__init__")
    return {n: inspect.getattr_static(cls, n) for n in sorted(names)}


def hints(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func, eval_str=True)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ASYNC_CLASSES, ids=lambda c: c.__name__)
def test_every_public_async_class_has_a_twin(cls: type) -> None:
    if cls.__name__ in NO_TWIN:
        assert cls not in TWINS, f"{cls.__name__} has a twin now: drop it from NO_TWIN"
        return
    assert cls in TWINS, f"konductor_sdk.{cls.__name__} has no twin in konductor_sdk.sync"
    twin = TWINS[cls]
    assert twin.__name__ == cls.__name__
    assert not has_async_members(twin), f"sync.{cls.__name__} has async members"


def _compare_signature(key: str, a: Any, b: Any) -> list[str]:
    problems: list[str] = []
    sa, sb = hints(a), hints(b)
    pa, pb = list(sa.parameters.values()), list(sb.parameters.values())
    if [(p.name, p.kind) for p in pa] != [(p.name, p.kind) for p in pb]:
        return [f"{key}: parameters {sa} != {sb}"]
    for x, y in zip(pa, pb, strict=True):
        if x.default != y.default:
            problems.append(f"{key}: default of {x.name}: {x.default!r} != {y.default!r}")
        if (
            x.name != "self"
            and blocking(x.annotation) != y.annotation
            and not deviates(f"{key}:annotation:{x.name}")
        ):
            problems.append(
                f"{key}: annotation of {x.name}: {blocking(x.annotation)} != {y.annotation}"
            )
    if blocking(sa.return_annotation) != sb.return_annotation:
        problems.append(
            f"{key}: returns {blocking(sa.return_annotation)} != {sb.return_annotation}"
        )
    if inspect.iscoroutinefunction(b) or inspect.isasyncgenfunction(b):
        problems.append(f"{key}: the twin is async")
    return problems


def _compare_member(cls: type, twin: type, name: str, a: Any) -> list[str]:
    key = f"{cls.__name__}.{name}"
    twin_name = RENAMED.get(name, name)
    if not hasattr(twin, twin_name):
        return [f"{key}: missing on the twin (as {twin_name})"]
    b = inspect.getattr_static(twin, twin_name)
    problems: list[str] = []
    if name == "__aenter__":
        if not hasattr(twin, "__exit__"):
            problems.append(f"{key}: the twin has __enter__ but no __exit__")
        ra, rb = hints(a).return_annotation, hints(b).return_annotation
        if blocking(ra) != rb:
            problems.append(f"{key}: __enter__ returns {rb}, expected {blocking(ra)}")
        return problems
    if isinstance(a, property):
        if not isinstance(b, property):
            return [f"{key}: a property on the async class, {type(b).__name__} on the twin"]
        ra, rb = hints(a.fget).return_annotation, hints(b.fget).return_annotation
        if blocking(ra) != rb:
            problems.append(f"{key}: property type {rb}, expected {blocking(ra)}")
        if (a.fset is None) != (b.fset is None):
            problems.append(f"{key}: settable on one side only")
    elif isinstance(a, staticmethod | classmethod):
        if type(a) is not type(b):
            return [f"{key}: {type(a).__name__} on the async class, not on the twin"]
        problems += _compare_signature(key, a.__func__, b.__func__)
    elif inspect.isfunction(a):
        if not inspect.isfunction(b):
            return [f"{key}: a method on the async class, {type(b).__name__} on the twin"]
        problems += _compare_signature(key, a, b)
    elif a != b:
        problems.append(f"{key}: class attribute {a!r} != {b!r}")
    doc_differs = adapted(inspect.getdoc(a)) != plain(inspect.getdoc(b))
    if name != "__init__" and doc_differs and not deviates(f"{key}:doc"):
        problems.append(f"{key}: docstring differs from the async one")
    return problems


def twin_problems(cls: type) -> list[str]:
    twin = TWINS[cls]
    problems: list[str] = []
    doc_differs = adapted(inspect.getdoc(cls)) != plain(inspect.getdoc(twin))
    if doc_differs and not deviates(f"{cls.__name__}:doc"):
        problems.append(f"{cls.__name__}: class docstring differs from the async one")
    async_members = public_members(cls)
    for name, member in async_members.items():
        problems += _compare_member(cls, twin, name, member)
    for name in sorted(instance_attributes(cls) - set(async_members)):
        if not hasattr(twin, name):
            problems.append(f"{cls.__name__}.{name}: attribute missing on the twin")
    expected = {RENAMED.get(n, n) for n in async_members} | instance_attributes(cls)
    for name in dir(twin):
        extra = not name.startswith("_") and name not in expected
        if extra and not deviates(f"{cls.__name__}.{name}"):
            problems.append(f"{cls.__name__}.{name}: only the twin has it (see EXTRAS)")
    return problems


@pytest.mark.parametrize("cls", list(TWINS), ids=lambda c: c.__name__)
def test_the_twin_has_every_member_as_the_async_class_has_it(cls: type) -> None:
    problems = twin_problems(cls)
    assert not problems, "\n".join(problems)


def test_public_functions_have_twins() -> None:
    functions = [n for n in konductor_sdk.__all__ if inspect.isfunction(getattr(konductor_sdk, n))]
    problems: list[str] = []
    for name in functions:
        a, b = getattr(konductor_sdk, name), getattr(sync, name, None)
        if b is None:
            problems.append(f"konductor_sdk.{name} has no twin")
            continue
        problems += _compare_signature(name, a, b)
        if adapted(inspect.getdoc(a)) != plain(inspect.getdoc(b)):
            problems.append(f"{name}: docstring differs")
    assert not problems, "\n".join(problems)


def test_shared_classes_are_the_async_ones() -> None:
    for name in sync.__all__:
        value = getattr(konductor_sdk, name, None)
        if value is not None and inspect.isclass(value) and value not in TWINS:
            assert getattr(sync, name) is value, name


def test_every_deviation_and_extra_is_still_needed() -> None:
    for cls in TWINS:
        twin_problems(cls)  # records which entries were needed (problems fail elsewhere)
    assert set(DEVIATIONS) | set(EXTRAS) <= used, sorted((set(DEVIATIONS) | set(EXTRAS)) - used)


def test_the_generated_modules_are_up_to_date() -> None:
    from konductor_sdk.sync._generate import leftovers, render_all

    written = render_all()
    stale = [p.name for p, text in written.items() if not p.exists() or p.read_text() != text]
    stale += [p.name for p in leftovers(written)]
    assert not stale, f"run `python -m konductor_sdk.sync._generate` (stale: {stale})"

"""Writes the blocking twins in ``konductor_sdk/sync/`` from the public async API.

After any change of a public async class, function or docstring::

    python -m konductor_sdk.sync._generate            # rewrite the twin modules
    python -m konductor_sdk.sync._generate --check    # exit 1 if one is out of date

If the checked-in twins no longer even import after an async change (a class they name
was removed), run the file instead, which does not import the sync package:
``python konductor_sdk/sync/_generate.py`` (that is why this is one self-contained
module). ``tests/unit/test_sync_parity.py`` fails while the checked-in files differ from
what this writes, and checks the result independently.

What is read: only the public surface, through :mod:`inspect` and the source's ``__init__``
assignments. For each public module ``konductor_sdk.<name>`` (a facade) there is one twin
module ``konductor_sdk.sync.<name>``, plus ``sync.client`` for
:class:`~konductor_sdk.Client` and :func:`~konductor_sdk.default_client`. A public class
with async members (coroutine methods, ``async with``, ``async for``) gets a twin of the
same name; every other public name is re-exported as is.

How a twin member is derived from its async original (same names, kinds, defaults):

* ``async def m(...) -> T`` becomes ``def m(...) -> T``, run in the portal's loop
  (Ctrl-C cancels it there); a plain method is called in the loop too; properties and
  instance attributes are read directly. ``aclose`` becomes ``close``.
* Types: a twinned class becomes its twin (arguments unwrapped, results wrapped),
  ``AbstractAsyncContextManager[T]`` becomes ``AbstractContextManager[T]``,
  ``AsyncIterator[T]`` becomes ``Iterator[T]``, :class:`anyio.Event` becomes
  :class:`konductor_sdk.sync.Event`, and a callback returning ``Awaitable[T]`` becomes one
  returning ``T`` (run in a worker thread).
* ``__aenter__`` becomes ``__enter__`` (``_context.BlockingContext`` supplies
  ``__exit__``); docstrings are copied with ``await``/``async with``/``async for`` adapted.

Hand-made parts, each listed below with its reason: classes constructed only by the
library (no constructor twin), lock twins that refuse re-entry per thread, and a
hand-written base for the parts of a twin that cannot be derived (LeaderElector).
Anything the rules above cannot express stops the generator with an error naming it.
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import contextlib
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, final

import anyio
import attrs

import konductor_sdk

SYNC_DIR = Path(__file__).resolve().parent
PACKAGE = "konductor_sdk"
COMMAND = "python -m konductor_sdk.sync._generate"
GENERATED_MARK = "(generated, do not edit)"  # on the first line of every twin module

# Public modules of konductor_sdk that are not facades of primitives.
NOT_FACADES: frozenset[str] = frozenset()
# Families beyond the facades: (twin module, async module, names).
EXTRA_FAMILIES = (("client", "konductor_sdk._kernel.client", ("Client", "default_client")),)

# Classes only the library constructs (what ``acquire()`` returns): their constructors are
# the engines' business, so their twins have none.
HANDED_OUT = frozenset({"Permit", "HeldLease"})
# Lock twins: each blocking call runs in a task of its own, so the async per-task
# re-entrancy check cannot see a thread asking twice; these twins check per thread.
NOT_REENTRANT = frozenset({"Mutex", "RWMutex"})
# Hand-written bases (module in konductor_sdk.sync, class): their members and class
# docstring replace the derived ones. LeaderElector's callbacks run in worker threads and
# ``run()`` ends on ``stop()``, since a blocking term cannot be cancelled (see _elector).
CUSTOM_BASES = {"LeaderElector": ("_elector", "BlockingElector")}
# Names a twin module exports beyond its async module's: (twin module, module, name).
EXTRA_EXPORTS = (
    ("election", "._elector", "Term"),
    # docs/lease.md has always pointed here for the elector too.
    ("lease", ".election", "LeaderElector"),
    ("lease", ".election", "Term"),
)
# What konductor_sdk.sync exports beyond the twins of konductor_sdk's names.
ROOT_EXTRAS = (("._twin", "Event"), (".election", "Term"), ("._portal", "shutdown"))
RENAMED = {"aclose": "close"}
PROTOCOL = frozenset({"__init__", "__aenter__", "__aiter__", "__anext__"})
ASYNC_DUNDERS = frozenset({"__await__", "__aexit__"})


class GenerationError(Exception):
    """The async API uses something the twin rules cannot express."""


def adapt_doc(doc: str) -> str:
    """A docstring for the blocking world: ``await x`` is ``x``, ``async with`` is ``with``
    (code comments aligned after them stay aligned)."""
    lines = []
    for line in doc.splitlines():
        new = re.sub(r"\bawait\s+", "", re.sub(r"\basync (with|for)\b", r"\1", line))
        comment, moved = line.find("  # "), new.find("  # ")
        if new != line and comment > 0 and 0 < moved < comment:
            new = f"{new[:moved]}{' ' * (comment - moved)}{new[moved:]}"
        lines.append(new)
    return "\n".join(lines)


# --- what is twinned ------------------------------------------------------------------------


@final
@attrs.frozen
class Family:
    """One twin module and the async module it mirrors."""

    name: str
    module: types.ModuleType
    names: tuple[str, ...]


def is_async_class(cls: type) -> bool:
    """Whether ``cls`` has async members (so it needs a twin)."""
    for name in dir(cls):
        if name.startswith("_") and name not in {"__aenter__", "__aiter__", "__anext__"}:
            continue
        member = inspect.getattr_static(cls, name)
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member):
            return True
    return False


def public_names(module: types.ModuleType) -> tuple[str, ...]:
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return tuple(exported)
    return tuple(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    )


def families() -> list[Family]:
    found = [
        Family(name, importlib.import_module(module), names)
        for name, module, names in EXTRA_FAMILIES
    ]
    for info in sorted(pkgutil.iter_modules(konductor_sdk.__path__), key=lambda i: i.name):
        if info.ispkg or info.name.startswith("_") or info.name in NOT_FACADES:
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        found.append(Family(info.name, module, public_names(module)))
    return found


@final
@attrs.frozen
class TwinRef:
    family: str
    name: str


def twin_table(all_families: list[Family]) -> dict[type, TwinRef]:
    table: dict[type, TwinRef] = {}
    for family in all_families:
        for name in family.names:
            value = getattr(family.module, name)
            if inspect.isclass(value) and is_async_class(value) and value not in table:
                table[value] = TwinRef(family.name, name)
    return table


# --- imports and type expressions of one generated module ---------------------------------


class Unsupported(GenerationError):
    pass


def _same(a: object, b: object) -> bool:
    return a is b or (isinstance(a, tuple) and a == b)


@final
class Spelling:
    """How one generated module spells types, values and conversions, and the imports
    that takes."""

    def __init__(
        self, family: Family, twins: dict[type, TwinRef], all_families: list[Family]
    ) -> None:
        self.family = family
        self.twins = twins
        self.families = all_families
        self.imports: dict[str, dict[str, str]] = {}  # module -> {local: name}
        self.bound: dict[str, object] = {}  # local name -> what it refers to
        self.exported: set[str] = set()  # imported to be re-exported (``Name as Name``)
        self.defined = {
            name
            for name in family.names
            if inspect.isclass(getattr(family.module, name))
            and getattr(family.module, name) in twins
        }

    def name(self, module: str, name: str, value: object) -> str:
        """The local name of ``module.name`` (importing it)."""
        if module == f".{self.family.name}" and name in self.defined:
            return name
        if name in self.bound and _same(self.bound[name], value):
            return name  # imported already (perhaps from another module, to re-export it)
        local = name
        if local in self.defined or (local in self.bound and not _same(self.bound[local], value)):
            local = f"_{module.strip('.').replace('.', '_')}_{name}"
        self.bound[local] = value
        self.imports.setdefault(module, {})[local] = name
        return local

    def module(self, module: types.ModuleType | str) -> str:
        """The local name of an async module (``_semaphore``)."""
        full = module if isinstance(module, str) else module.__name__
        parent, _, last = full.rpartition(".")
        local = f"_{last}"
        if self.bound.get(local, full) != full:
            raise GenerationError(f"two async modules named {last}")
        self.bound[local] = full
        self.imports.setdefault(parent, {})[local] = last
        return local

    def helper(self, name: str) -> str:
        """``_portal``, ``_twin``, ``_context``: the sync package's own helpers."""
        self.bound[name] = name
        self.imports.setdefault(".", {})[name] = name
        return name

    def async_class(self, cls: type) -> str:
        """How generated code reaches the async class ``cls`` (through its module)."""
        ref = self.twins.get(cls)
        source = self.family.module if ref and ref.family == self.family.name else None
        if source is None or getattr(source, cls.__name__, None) is not cls:
            source = importlib.import_module(cls.__module__)
        return f"{self.module(source)}.{cls.__name__}"

    def public_home(self, value: object, name: str, fallback: str) -> str:
        """The module to import ``value`` from: the public root, a family exporting it,
        else ``fallback`` (where it is defined)."""
        candidates: list[tuple[types.ModuleType, Sequence[str]]] = [
            (importlib.import_module(PACKAGE), konductor_sdk.__all__)
        ]
        candidates += [(f.module, f.names) for f in self.families]
        candidates.append((importlib.import_module(fallback), [name]))
        for module, names in candidates:
            if name in names and getattr(module, name, None) is value:
                return module.__name__
        raise GenerationError(f"cannot import {name} ({value!r}) from {fallback}")

    def reexport(self, module: str, name: str, value: object) -> None:
        if name in self.bound and not _same(self.bound[name], value):
            raise GenerationError(f"{self.family.name}: two different things named {name}")
        self.bound[name] = value
        self.exported.add(name)
        self.imports.setdefault(module, {})[name] = name

    def cls(self, cls: type) -> str:
        if cls.__module__ == "builtins":
            return cls.__name__
        if cls in self.twins:
            ref = self.twins[cls]
            return self.name(f".{ref.family}", ref.name, ("twin", cls))
        if cls is anyio.Event:
            return self.name("._twin", "Event", ("twin", cls))
        if cls.__module__.startswith(f"{PACKAGE}."):
            home = self.public_home(cls, cls.__name__, cls.__module__)
        else:
            home = cls.__module__
        return self.name(home, cls.__qualname__, cls)

    # -- types ------------------------------------------------------------------------------

    def spell(self, t: object, where: str) -> str:
        """``t`` (an evaluated annotation of the async API) as the twin spells it."""
        if t is None or t is type(None):
            return "None"
        if t is Any:
            return self.name("typing", "Any", Any)
        if t is Ellipsis:
            return "..."
        if isinstance(t, str | typing.ForwardRef | typing.TypeVar | typing.ParamSpec):
            raise Unsupported(f"{where}: cannot spell the annotation {t!r} in a twin")
        origin, args = typing.get_origin(t), typing.get_args(t)
        if origin in (typing.Union, types.UnionType):
            return " | ".join(self.spell(a, where) for a in args)
        if origin is Literal:
            return self.literal(t, args)
        if origin is contextlib.AbstractAsyncContextManager:
            cm = self.name("contextlib", "AbstractContextManager", AbstractContextManager)
            return f"{cm}[{self.spell(args[0], where)}]"
        if origin in (
            collections.abc.AsyncIterator,
            collections.abc.AsyncIterable,
            collections.abc.AsyncGenerator,
        ):
            it = self.name("collections.abc", "Iterator", collections.abc.Iterator)
            return f"{it}[{self.spell(args[0], where)}]"
        if origin is collections.abc.Callable:
            return self.callable(args, where)
        if origin is not None:
            inner = ", ".join(self.spell(a, where) for a in args) if args else "()"
            return f"{self.origin(origin)}[{inner}]"
        if isinstance(t, type):
            return self.cls(t)
        raise Unsupported(f"{where}: cannot spell the annotation {t!r} in a twin")

    def origin(self, origin: type) -> str:
        if origin.__module__ == "builtins":
            return origin.__name__
        if origin.__module__ == "collections.abc":
            return self.name("collections.abc", origin.__name__, origin)
        return self.cls(origin)

    def callable(self, args: tuple[Any, ...], where: str) -> str:
        params, ret = args[0], args[1]
        if typing.get_origin(ret) in (collections.abc.Awaitable, collections.abc.Coroutine):
            ret = typing.get_args(ret)[-1]  # a blocking callback returns what was awaited
        for p in [] if params is Ellipsis else params:
            if self.mentions_twin(p):
                raise Unsupported(f"{where}: a callback taking {p!r} needs a hand-written twin")
        spelled = (
            "..." if params is Ellipsis else f"[{', '.join(self.spell(p, where) for p in params)}]"
        )
        c = self.name("collections.abc", "Callable", collections.abc.Callable)
        return f"{c}[{spelled}, {self.spell(ret, where)}]"

    def literal(self, t: object, args: tuple[Any, ...]) -> str:
        for module in (self.family.module, *[f.module for f in self.families]):
            for name, value in vars(module).items():
                if not name.startswith("_") and value == t and typing.get_origin(value) is Literal:
                    return self.name(module.__name__, name, value)
        lit = self.name("typing", "Literal", Literal)
        return f"{lit}[{', '.join(repr(a) for a in args)}]"

    def mentions_twin(self, t: object) -> bool:
        if isinstance(t, type) and (t in self.twins or t is anyio.Event):
            return True
        return any(self.mentions_twin(a) for a in typing.get_args(t) if a is not Ellipsis)

    # -- conversions ------------------------------------------------------------------------

    def converter(self, t: object, where: str) -> str:
        """A function turning an async value of type ``t`` into its blocking twin."""
        if isinstance(t, type) and t in self.twins:
            return f"{self.cls(t)}._wrap"
        if t is anyio.Event:
            return f"{self.helper('_twin')}.Event"
        if not self.mentions_twin(t):
            return f"{self.helper('_twin')}.same"
        raise Unsupported(f"{where}: no conversion for {t!r}")

    def result(self, t: object, expr: str, where: str) -> str:
        """``expr`` (an async value of type ``t``) converted for the blocking caller."""
        origin, args = typing.get_origin(t), typing.get_args(t)
        if origin is contextlib.AbstractAsyncContextManager:
            conv = self.converter(args[0], where)
            return f"{self.helper('_context')}.blocking({expr}, {conv})"
        if origin in (
            collections.abc.AsyncIterator,
            collections.abc.AsyncIterable,
            collections.abc.AsyncGenerator,
        ):
            conv = self.converter(args[0], where)
            if origin is collections.abc.AsyncIterable:
                expr = f"aiter({expr})"
            return f"{self.helper('_twin')}.BlockingIterator({expr}, {conv})"
        if not self.mentions_twin(t):
            return expr
        if isinstance(t, type):
            return f"{self.converter(t, where)}({expr})"
        if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
            (inner,) = (a for a in args if a is not type(None))
            return f"{self.helper('_twin')}.maybe({self.converter(inner, where)}, {expr})"
        if origin in (tuple, list) and (len(args) == 1 or args[1:] == (Ellipsis,)):
            return f"{origin.__name__}(map({self.converter(args[0], where)}, {expr}))"
        raise Unsupported(f"{where}: no conversion for a result of type {t!r}")

    def argument(self, t: object, expr: str, where: str) -> str:
        """A blocking argument ``expr`` as the async callee wants it."""
        if t is inspect.Parameter.empty:
            return expr
        union = typing.get_origin(t) in (typing.Union, types.UnionType)
        members = tuple(m for m in (typing.get_args(t) if union else (t,)) if m is not type(None))
        if members and all(isinstance(m, type) and m in self.twins for m in members):
            return f"{self.helper('_twin')}.unwrap({expr})"
        if len(members) == 1 and typing.get_origin(members[0]) is collections.abc.Callable:
            ret = typing.get_args(members[0])[-1]
            if typing.get_origin(ret) in (collections.abc.Awaitable, collections.abc.Coroutine):
                return f"{self.helper('_twin')}.awaitable({expr})"
        if self.mentions_twin(t):
            raise Unsupported(f"{where}: no conversion for an argument of type {t!r}")
        return expr

    def default(self, value: object, func: Callable[..., Any], where: str) -> str:
        literal = (type(None), bool, int, float, str, bytes)
        if isinstance(value, literal) or (
            isinstance(value, tuple) and all(isinstance(v, literal) for v in value)
        ):
            with contextlib.suppress(ValueError, SyntaxError):
                if ast.literal_eval(repr(value)) == value:
                    return repr(value)
        names = sorted(n for n, v in func.__globals__.items() if v is value)
        public = [n for n in names if not n.startswith("_")] or names
        if not public:
            raise Unsupported(f"{where}: cannot spell the default {value!r}")
        return self.name(_home_of(func.__module__, public[0]), public[0], value)

    def render_imports(self) -> str:
        lines = ["from __future__ import annotations", ""]
        for module, names in sorted(self.imports.items()):
            spelled = ", ".join(
                f"{name} as {local}" if local != name or name in self.exported else name
                for local, name in sorted(names.items())
            )
            if module == ".":
                lines.append(f"from . import {spelled}")
            else:
                lines.append(f"from {module} import {spelled}")
        return "\n".join(lines)


def _home_of(module: str, name: str) -> str:
    """Where ``module`` got ``name`` from (following ``from x import name``)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
            if node.level:
                package = module.rsplit(".", node.level)[0]
                return f"{package}.{node.module}" if node.module else package
            return str(node.module)
    return module


# --- reading the async classes -------------------------------------------------------------


def signature(func: Callable[..., Any], where: str) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, AttributeError) as exc:
        raise GenerationError(
            f"{where}: an annotation does not evaluate at runtime ({exc}); import the name "
            "outside TYPE_CHECKING in the async module"
        ) from exc


def docstring(obj: object) -> str | None:
    doc = inspect.getdoc(obj)
    return adapt_doc(doc) if doc else None


def init_attributes(cls: type) -> dict[str, object | None]:
    """Public instance attributes of ``cls``: declared on the class, or assigned to ``self``
    in an ``__init__`` of its MRO, with their type when it can be named (else ``None``)."""
    found: dict[str, set[object]] = {}
    declared: dict[str, object | None] = {}  # annotated assignments win
    for klass in reversed(cls.__mro__):
        if klass.__module__ == "builtins" or klass.__module__.startswith(("typing", "abc")):
            continue
        hints = vars(klass).get("__annotations__", {})
        module_globals = vars(sys.modules[klass.__module__])
        for name, annotation in hints.items():
            if name.startswith("_") or "ClassVar" in str(annotation):
                continue
            found[name] = {_evaluate(annotation, module_globals)}
        init = vars(klass).get("__init__")
        if not inspect.isfunction(init):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(init))
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(source)):
            for target, value, annotation in _assignments(node):
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                    and not target.attr.startswith("_")
                    and target.attr not in hints
                ):
                    kind = _infer(value, annotation, init)
                    if annotation is not None:
                        declared[target.attr] = kind
                    found.setdefault(target.attr, set()).add(kind)
    found.update({name: {kind} for name, kind in declared.items()})
    return {name: kinds.pop() if len(kinds) == 1 else None for name, kinds in found.items()}


def _assignments(node: ast.AST) -> Iterator[tuple[ast.expr, ast.expr | None, ast.expr | None]]:
    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield target, node.value, None
    elif isinstance(node, ast.AnnAssign):
        yield node.target, node.value, node.annotation


def _evaluate(annotation: object, namespace: dict[str, Any]) -> object | None:
    if not isinstance(annotation, str):
        return annotation
    try:
        value: object = eval(annotation, namespace)  # the async module's own annotation
    except Exception:
        return None
    return value


def _infer(value: ast.expr | None, annotation: ast.expr | None, init: Any) -> object | None:
    namespace = init.__globals__
    if annotation is not None:
        return _evaluate(ast.unparse(annotation), namespace)
    params = inspect.signature(init).parameters
    if isinstance(value, ast.Name) and value.id in params:
        return _evaluate(params[value.id].annotation, namespace)
    if isinstance(value, ast.Constant) and type(value.value) in (bool, int, float, str):
        return type(value.value)
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name | ast.Attribute):
        callee = _evaluate(ast.unparse(value.func), namespace)
        if isinstance(callee, type):
            generic = getattr(callee, "__parameters__", ()) or callee in (dict, list, set, tuple)
            return None if generic else callee
        if inspect.isfunction(callee):
            return _evaluate(callee.__annotations__.get("return"), callee.__globals__)
    return None


def members(cls: type) -> list[tuple[str, object]]:
    """Public members of ``cls`` in definition order, most derived class first."""
    seen: dict[str, object] = {}
    for klass in cls.__mro__:
        if klass.__module__ == "builtins" or klass.__module__.startswith(("typing", "abc")):
            continue
        for name in vars(klass):
            if name in seen or (name.startswith("_") and name not in PROTOCOL | ASYNC_DUNDERS):
                continue
            seen[name] = inspect.getattr_static(cls, name)
    return list(seen.items())


# --- writing one twin ------------------------------------------------------------------------


def _docstring_lines(doc: str | None, indent: str) -> list[str]:
    if not doc:
        return []
    if '"""' in doc:
        raise GenerationError(f"a docstring contains triple quotes: {doc[:40]!r}")
    prefix = 'r"""' if "\\" in doc else '"""'
    lines = doc.splitlines()
    if len(lines) == 1:
        return [f'{indent}{prefix}{lines[0]}"""']
    body = [f"{indent}{line}" if line else "" for line in lines[1:]]
    return [f"{indent}{prefix}{lines[0]}", *body, f'{indent}"""']


def _parameters(
    m: Spelling, sig: inspect.Signature, func: Callable[..., Any], where: str, skip_self: bool
) -> tuple[str, str]:
    """The twin's parameter list, and the arguments to pass them on to the async callee."""
    params = list(sig.parameters.values())[1 if skip_self else 0 :]
    spelled, passed = ["self"] if skip_self else [], []
    star = False
    for i, p in enumerate(params):
        annotation = "" if p.annotation is p.empty else f": {m.spell(p.annotation, where)}"
        default = "" if p.default is p.empty else f" = {m.default(p.default, func, where)}"
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY
        ):
            default += ", /"
        if p.kind is p.KEYWORD_ONLY and not star:
            spelled.append("*")
            star = True
        value = m.argument(p.annotation, p.name, f"{where}({p.name})")
        if p.kind is p.VAR_POSITIONAL:
            star = True
            spelled.append(f"*{p.name}{annotation}")
            passed.append(f"*{value}")
        elif p.kind is p.VAR_KEYWORD:
            spelled.append(f"**{p.name}{annotation}")
            passed.append(f"**{value}")
        elif p.kind is p.KEYWORD_ONLY:
            spelled.append(f"{p.name}{annotation}{default}")
            passed.append(f"{p.name}={value}")
        else:
            spelled.append(f"{p.name}{annotation}{default}")
            passed.append(value)
    return ", ".join(spelled), "".join(f", {a}" for a in passed)


def _returns(m: Spelling, sig: inspect.Signature, where: str) -> object:
    if sig.return_annotation is sig.empty:
        raise GenerationError(f"{where}: no return annotation")
    return sig.return_annotation


def _body(value: str, t: object) -> str:
    return value if t is None or t is type(None) else f"return {value}"


def render_method(m: Spelling, cls: type, name: str, func: Callable[..., Any]) -> list[str]:
    where = f"{cls.__name__}.{name}"
    sig = signature(func, where)
    spelled, passed = _parameters(m, sig, func, where, skip_self=True)
    ret = _returns(m, sig, where)
    how = "run" if inspect.iscoroutinefunction(func) else "call"
    value = m.result(ret, f"{m.helper('_portal')}.{how}(self._async.{name}{passed})", where)
    if cls.__name__ in NOT_REENTRANT and m.mentions_twin(ret):  # an acquisition
        if typing.get_origin(ret) is contextlib.AbstractAsyncContextManager:
            value = f"self._owned_context({value})"
        else:
            value = f"self._owned(lambda: {value})"
    return [
        f"    def {RENAMED.get(name, name)}({spelled}) -> {m.spell(ret, where)}:",
        *_docstring_lines(docstring(func), "        "),
        f"        {_body(value, ret)}",
    ]


def render_function(m: Spelling, name: str, func: Callable[..., Any]) -> list[str]:
    where = f"{m.family.module.__name__}.{name}"
    sig = signature(func, where)
    spelled, passed = _parameters(m, sig, func, where, skip_self=False)
    ret = _returns(m, sig, where)
    how = "run" if inspect.iscoroutinefunction(func) else "call"
    callee = f"{m.module(m.family.module)}.{name}"
    value = m.result(ret, f"{m.helper('_portal')}.{how}({callee}{passed})", where)
    return [
        f"def {name}({spelled}) -> {m.spell(ret, where)}:",
        *_docstring_lines(docstring(func), "    "),
        f"    {_body(value, ret)}",
    ]


def custom_base(cls: type) -> tuple[str, str, set[str], str | None] | None:
    """A hand-written base of ``cls``'s twin: (module, class, members, docstring)."""
    if cls.__name__ not in CUSTOM_BASES:
        return None
    module, name = CUSTOM_BASES[cls.__name__]
    tree = ast.parse((SYNC_DIR / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            defined = {
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            return module, name, defined, ast.get_docstring(node)
    raise GenerationError(f"{module}.py has no class {name}")


def render_class(m: Spelling, cls: type) -> list[str]:
    where = cls.__name__
    async_cls = m.async_class(cls)
    custom = custom_base(cls)
    bases = []
    if cls.__name__ in NOT_REENTRANT:
        bases.append(f"{m.helper('_context')}.NotReentrant")
    if hasattr(cls, "__aenter__"):
        bases.append(f"{m.helper('_context')}.BlockingContext")
    if custom is not None:
        module, base, skip, doc = custom
        bases.append(f"{m.helper(module)}.{base}")
    else:
        skip, doc = set(), docstring(cls)
        bases.append(f"{m.helper('_twin')}.Twin[{async_cls}]")
    lines = [f"@{m.name('typing', 'final', final)}"] if getattr(cls, "__final__", False) else []
    lines += [f"class {cls.__name__}({', '.join(bases)}):", *_docstring_lines(doc, "    ")]
    body: list[list[str]] = []
    all_members = members(cls)
    if "__init__" not in skip and cls.__name__ not in HANDED_OUT:
        init = inspect.getattr_static(cls, "__init__")
        sig = signature(init, f"{where}.__init__")
        spelled, passed = _parameters(m, sig, init, f"{where}.__init__", skip_self=True)
        body.append(
            [
                f"    def __init__({spelled}) -> None:",
                *_docstring_lines(docstring(init) if init.__doc__ else None, "        "),
                f"        self._bind({m.helper('_portal')}.call({async_cls}{passed}))",
            ]
        )
    for name, kind in init_attributes(cls).items():
        if name in skip or any(name == n for n, _ in all_members):
            continue
        body.append(render_attribute(m, cls, async_cls, name, kind))
    for name, member in all_members:
        if name in skip or name == "__init__":
            continue
        body.append(render_member(m, cls, name, member))
    for chunk in body:
        if chunk:
            lines += ["", *chunk]
    return lines


def render_attribute(m: Spelling, cls: type, async_cls: str, name: str, kind: object) -> list[str]:
    where = f"{cls.__name__}.{name}"
    if kind is None:
        return [f"    {name} = {m.helper('_twin')}.attribute({async_cls}, lambda a: a.{name})"]
    value = m.result(kind, f"self._async.{name}", where)
    return [
        "    @property",
        f"    def {name}(self) -> {m.spell(kind, where)}:",
        f"        return {value}",
    ]


def render_member(m: Spelling, cls: type, name: str, member: object) -> list[str]:
    where = f"{cls.__name__}.{name}"
    if name == "__aenter__":
        ret = _returns(m, signature(member, where), where)  # type: ignore[arg-type]
        conv = m.converter(ret, where)
        block = f"{m.helper('_context')}.blocking(self._async, {conv})"
        if cls.__name__ in NOT_REENTRANT:
            block = f"self._owned_context({block})"
        return [
            f"    def __enter__(self) -> {m.spell(ret, where)}:",
            *_docstring_lines(docstring(member), "        "),
            f"        return self._enter_block({block})",
        ]
    if name == "__aexit__":
        return []  # BlockingContext.__exit__
    if name in ("__aiter__", "__anext__", "__await__"):
        raise Unsupported(f"{where}: twins of {name} are not written yet")
    if isinstance(member, property):
        if member.fset is not None or member.fdel is not None:
            raise Unsupported(f"{where}: a property with a setter")
        assert member.fget is not None
        ret = _returns(m, signature(member.fget, where), where)
        return [
            "    @property",
            f"    def {name}(self) -> {m.spell(ret, where)}:",
            *_docstring_lines(docstring(member), "        "),
            f"        return {m.result(ret, f'self._async.{name}', where)}",
        ]
    if isinstance(member, staticmethod | classmethod):
        raise Unsupported(f"{where}: twins of static and class methods are not written yet")
    if inspect.isfunction(member):
        return render_method(m, cls, name, member)
    if callable(member) or hasattr(member, "__get__"):
        raise Unsupported(f"{where}: {type(member).__name__} members are not supported")
    return [f"    {name} = {m.async_class(cls)}.{name}"]


def module_docstring(family: Family) -> list[str]:
    source = family.module.__name__
    lines = [
        f"Blocking twins of :mod:`{source}` {GENERATED_MARK}.",
        "",
    ]
    doc = inspect.getdoc(family.module)
    if doc:
        lines += [*adapt_doc(doc).splitlines(), ""]
    lines += [
        f"Written from the public async API by ``{COMMAND}``; how",
        "the blocking calls behave: :mod:`konductor_sdk.sync`.",
    ]
    return _docstring_lines("\n".join(lines), "")


def render_family(family: Family, twins: dict[type, TwinRef], all_families: list[Family]) -> str:
    m = Spelling(family, twins, all_families)
    blocks: list[list[str]] = []
    exports: dict[str, None] = {}
    for name in family.names:  # first, so that annotations use these imports
        value = getattr(family.module, name)
        exports[name] = None
        if inspect.isclass(value) and value in twins and twins[value].family != family.name:
            m.reexport(f".{twins[value].family}", name, ("twin", value))
        elif not (inspect.isclass(value) and value in twins) and not inspect.isfunction(value):
            m.reexport(family.module.__name__, name, value)
    for target, module, name in EXTRA_EXPORTS:
        if target == family.name:
            m.reexport(module, name, (module, name))
            exports[name] = None
    for name in family.names:
        value = getattr(family.module, name)
        if inspect.isclass(value) and value in twins and twins[value].family == family.name:
            blocks.append(render_class(m, value))
        elif inspect.isfunction(value):
            blocks.append(render_function(m, name, value))
    exported = "\n".join(f"    {name!r}," for name in sorted(exports))
    text = [
        *module_docstring(family),
        "",
        m.render_imports(),
        "",
        f"__all__ = [\n{exported}\n]".replace("'", '"'),
    ]
    for block in blocks:
        text += ["", "", *block]
    return "\n".join(text) + "\n"


ROOT_DOC = '''"""Blocking twins of the async primitives, for scripts: ``with Semaphore("gpu"):``.

Every class here is the twin of the :mod:`konductor_sdk` class of the same name: the same
methods, parameters, defaults and docstrings, written from the async API by
``{command}`` (run it after an async change; the parity
test fails until then). Status, statistics and configuration classes are the async ones,
re-exported.

How the blocking calls behave:

* Every call runs the async implementation in one background event loop (a daemon thread
  with an anyio ``BlockingPortal``), so the semantics are the async ones; renewals keep
  running there while the calling thread works.
* Ctrl-C while a call blocks cancels it in the loop, as cancellation does in the async
  API (a waiter leaves the queue; a permit granted just then is given back).
* A blocking ``with`` body cannot be cancelled: a permit or lease lost (or preempted)
  while held is reported by ``permit.lost`` / ``permit.preempt_requested`` /
  ``held.lost`` during the body, given back when the block ends, and raised then
  (:class:`~konductor_sdk.PermitLost`, :class:`~konductor_sdk.LeadershipLost`).
* Callbacks (``Once.run``'s function, the elector's callbacks) run in worker threads.
* Clients: primitives made without ``client=`` share the loop's default client
  (:func:`default_client`). Make your own with :class:`Client` (``with Client(...) as
  client:``, or ``client.close()``). :func:`shutdown` closes them all and stops the
  loop; it also runs at interpreter exit.
"""
'''


def render_root(all_families: list[Family], twins: dict[type, TwinRef]) -> str:
    exports: dict[str, str] = {}
    for name in konductor_sdk.__all__:
        value = getattr(konductor_sdk, name)
        for family in all_families:
            if getattr(family.module, name, None) is value and name in family.names:
                exports.setdefault(name, f".{family.name}")
    for module, name in ROOT_EXTRAS:
        exports[name] = module
    lines = [ROOT_DOC.format(command=COMMAND).rstrip("\n"), ""]
    for name, module in sorted(exports.items(), key=lambda kv: (kv[1], kv[0])):
        lines.append(f"from {module} import {name} as {name}")
    body = "\n".join(f'    "{name}",' for name in sorted(exports))
    lines += ["", f"__all__ = [\n{body}\n]"]
    return "\n".join(lines) + "\n"


# --- the whole package -----------------------------------------------------------------------


def render_all(*, tidy: bool = True) -> dict[Path, str]:
    """Every generated file's path and text (``tidy``: import-sorted and formatted by ruff,
    as ``make check`` wants them)."""
    all_families = families()
    twins = twin_table(all_families)
    out = {SYNC_DIR / f"{f.name}.py": render_family(f, twins, all_families) for f in all_families}
    out[SYNC_DIR / "__init__.py"] = render_root(all_families, twins)
    if tidy:
        out = {path: _ruff(path, text) for path, text in out.items()}
    return out


def _ruff(path: Path, text: str) -> str:
    for command in (["check", "--fix", "--select", "I,F401", "--quiet"], ["format", "--quiet"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(path), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 1) or not done.stdout:
            raise GenerationError(f"ruff {command[0]} failed on {path.name}: {done.stderr}")
        text = done.stdout
    return text


def leftovers(written: dict[Path, str]) -> list[Path]:
    """Generated twin modules whose async module is gone."""
    return sorted(
        path
        for path in SYNC_DIR.glob("*.py")
        if path not in written and GENERATED_MARK in path.read_text().partition("\n")[0]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    written = render_all()
    changed = [p for p, text in written.items() if not p.exists() or p.read_text() != text]
    gone = leftovers(written)
    for path in changed if not args.check else []:
        path.write_text(written[path])
    for path in gone if not args.check else []:
        path.unlink()
    root = SYNC_DIR.parents[1]
    for path in changed:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(root)}")
    for path in gone:
        print(f"{'left over' if args.check else 'removed'}: {path.relative_to(root)}")
    return 1 if args.check and (changed or gone) else 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == SYNC_DIR:
        sys.path.pop(0)  # run as a file: don't let this directory shadow top-level modules
    sys.exit(main())

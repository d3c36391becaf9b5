"""A small RFC 6902 JSON patch applier (add, remove, replace, test), for pure tests of
the patches the machines build: what the API server does with them, minus admission."""

from __future__ import annotations

import copy
from typing import Any


class PatchFailed(Exception):
    """A ``test`` failed or a path is missing (the server answers 422)."""


def _parts(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchFailed(f"bad path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            raise PatchFailed(f"missing /{'/'.join(parts)}")
        node = node[part]
    if not isinstance(node, dict):
        raise PatchFailed(f"not an object at /{'/'.join(parts[:-1])}")
    return node


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """``doc`` with ``ops`` applied, all or nothing (``doc`` itself is not changed).

    Raises:
        PatchFailed: a ``test`` did not match, or a path does not exist.
    """
    out = copy.deepcopy(doc)
    for op in ops:
        parts = _parts(op["path"])
        parent = _parent(out, parts)
        leaf = parts[-1]
        kind = op["op"]
        if kind == "test":
            if leaf not in parent or parent[leaf] != op["value"]:
                raise PatchFailed(f"test {op['path']} == {op['value']!r} failed")
        elif kind == "add":
            parent[leaf] = copy.deepcopy(op["value"])
        elif kind == "replace":
            if leaf not in parent:
                raise PatchFailed(f"replace: missing {op['path']}")
            parent[leaf] = copy.deepcopy(op["value"])
        elif kind == "remove":
            if leaf not in parent:
                raise PatchFailed(f"remove: missing {op['path']}")
            del parent[leaf]
        else:  # pragma: no cover - the machines build no other ops
            raise PatchFailed(f"unsupported op {kind}")
    return out

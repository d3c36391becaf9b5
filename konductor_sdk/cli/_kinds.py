"""The kinds koncli knows, their one-line help and their other names.

Kept free of the SDK (and of attrs/YAML) because ``koncli --help`` reads it: the short names
come from the ``spec.names`` block of the CRDs shipped with the SDK, scanned as text
(:func:`crd_names`; a unit test checks the scan against a full YAML parse), so a new kind's
CRD brings its short names along.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Final

KIND_HELP: Final[Mapping[str, str]] = {
    "semaphore": "Counting semaphores: N permits shared by weighted, prioritized holders.",
    "mutex": "Mutexes: one holder at a time, fair FIFO queue.",
    "rwmutex": "Reader/writer mutexes: many readers or one writer.",
    "lease": "Leases: one holder with a TTL (leader election).",
    "barrier": "Barriers: wait until the expected number of parties arrived.",
    "gate": "Gates: wait until every condition is met.",
    "once": "Once: run something exactly once across the cluster.",
    "waitgroup": "Wait groups: wait until a counter of pending work drops to zero.",
    "session": "Sessions: each client's liveness; everything it holds or waits for names one.",
    "claim": "Claims: one per queued request, lease candidate or batch of barrier arrivals.",
}
# CLI names, in the order ``--help`` and ``watch`` show them; each is its Kind, lowercased.
KIND_NAMES: Final = tuple(KIND_HELP)

_NAMES_BLOCK = re.compile(
    r"(?m)^(?P<indent>[ \t]*)names:[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+\S.*\n?)+)"
)
_KIND = re.compile(r"(?m)^[ \t]*kind:[ \t]*['\"]?(?P<kind>\w+)")
_SHORT_FLOW = re.compile(r"(?m)^[ \t]*shortNames:[ \t]*\[(?P<items>[^\]]*)\]")
_SHORT_BLOCK = re.compile(
    r"(?m)^[ \t]*shortNames:[ \t]*\n(?P<items>(?:[ \t]*-[ \t]*\S+[ \t]*\n?)+)"
)


def crd_names(text: str) -> tuple[str, list[str]] | None:
    """``(kind, shortNames)`` from a CRD's ``spec.names`` block; ``None`` if not found."""
    block = _NAMES_BLOCK.search(text)
    if block is None:
        return None
    body = block.group("body")
    kind = _KIND.search(body)
    if kind is None:
        return None
    shorts: list[str] = []
    flow = _SHORT_FLOW.search(body)
    if flow is not None:
        shorts = [s.strip().strip("'\"") for s in flow.group("items").split(",") if s.strip()]
    else:
        listed = _SHORT_BLOCK.search(body)
        if listed is not None:
            shorts = [
                line.strip()[1:].strip().strip("'\"")
                for line in listed.group("items").splitlines()
                if line.strip()
            ]
    return kind.group("kind"), shorts


def crd_texts() -> Iterator[str]:
    """The text of every CRD file shipped in ``konductor_sdk/crds``."""
    from importlib import resources

    for entry in sorted(resources.files("konductor_sdk").joinpath("crds").iterdir(), key=str):
        if entry.name.endswith(".yaml"):
            yield entry.read_text(encoding="utf-8")


@functools.cache
def _table() -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """CLI kind -> (plural, short names), for the kinds koncli knows."""
    out: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for text in crd_texts():
        names = crd_names(text)
        if names is None or names[0].lower() not in KIND_HELP:
            continue
        plural = re.search(r"(?m)^[ \t]*plural:[ \t]*['\"]?(\w+)", text)
        out[names[0].lower()] = (plural.group(1) if plural else None, tuple(names[1]))
    return out


def aliases() -> dict[str, str]:
    """Other names of each kind -> its CLI name: the CRD's plural and short names
    (``semaphores``, ``sem`` -> ``semaphore``)."""
    out: dict[str, str] = {}
    for kind, (plural, shorts) in _table().items():
        if plural is not None:
            out[plural] = kind
        out.update(dict.fromkeys(shorts, kind))
    return out


def short_names(kind: str) -> list[str]:
    """The CRD short names of ``kind`` (``["sem"]``), as ``koncli --help`` shows them."""
    return sorted(_table().get(kind, (None, ()))[1])

"""What ``koncli run`` acquires before starting its child, and in which order.

Several processes that each take several locks deadlock unless everyone takes them in the
same order. ``koncli run`` therefore sorts what it was given into one global order that
does not depend on the order of the flags:

1. gates (waits only: nothing is held while waiting on them),
2. barriers (likewise; held locks would make the other parties wait on us),
3. leases, mutexes, rwmutexes, semaphores — in that kind order, then by namespace and
   name.

Parsing and ordering are pure; :func:`._sdk.open_hold` adapts each spec to the SDK
primitive's ``async with`` form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, final

import attrs

from konductor_sdk._kernel.errors import ConfigurationError

HoldKind = Literal["gate", "barrier", "lease", "mutex", "rwmutex", "semaphore"]
KIND_ORDER: Final[tuple[HoldKind, ...]] = (
    "gate",
    "barrier",
    "lease",
    "mutex",
    "rwmutex",
    "semaphore",
)
# Kinds whose ownership lasts while the child runs (renewed, may be lost).
HELD_KINDS: Final = frozenset({"lease", "mutex", "rwmutex", "semaphore"})


@final
@attrs.frozen
class HoldSpec:
    """One thing to acquire (or wait for) before the child starts.

    Attributes:
        kind: the primitive.
        name: its name.
        namespace: ``None`` for the client's namespace.
        weight: permits to take (semaphores only).
        mode: ``"read"`` or ``"write"`` for rwmutexes, else ``""``.
        expected: parties a barrier is created with if it does not exist yet.
    """

    kind: HoldKind
    name: str
    namespace: str | None = None
    weight: int = 1
    mode: str = ""
    expected: int | None = None

    def sort_key(self) -> tuple[int, str, str, str]:
        return (KIND_ORDER.index(self.kind), self.namespace or "", self.name, self.mode)

    def describe(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        extra = f" weight={self.weight}" if self.kind == "semaphore" and self.weight != 1 else ""
        if self.expected is not None:
            extra = f" expected={self.expected}"
        mode = f" ({self.mode})" if self.mode else ""
        return f"{self.kind} {where}{mode}{extra}"


def _split_ns(ref: str) -> tuple[str | None, str]:
    namespace, sep, name = ref.rpartition("/")
    return (namespace or None) if sep else None, name


def _ref_with_count(ref: str, flag: str, what: str) -> tuple[str, int | None]:
    body, sep, count_text = ref.partition(":")
    if not sep:
        return body, None
    try:
        count = int(count_text, 10)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigurationError(
            f"{flag} {ref!r}: {what} must be an integer >= 1, got {count_text!r}"
        )
    return body, count


def parse_semaphore(ref: str, default_weight: int) -> HoldSpec:
    """``NAME``, ``NAME:WEIGHT``, ``NAMESPACE/NAME[:WEIGHT]``.

    Raises:
        ConfigurationError: empty name or weight not an integer >= 1.
    """
    body, weight = _ref_with_count(ref, "--semaphore", "weight")
    return _spec("semaphore", body, "--semaphore", weight=weight or default_weight)


def parse_barrier(ref: str) -> HoldSpec:
    """``NAME`` (must exist) or ``NAME:EXPECTED`` (created with that many parties).

    Raises:
        ConfigurationError: empty name or expected not an integer >= 1.
    """
    body, expected = _ref_with_count(ref, "--barrier", "expected")
    return _spec("barrier", body, "--barrier", expected=expected)


def _spec(kind: HoldKind, ref: str, flag: str, **kwargs: Any) -> HoldSpec:
    namespace, name = _split_ns(ref)
    if not name:
        raise ConfigurationError(f"{flag} {ref!r}: the name must not be empty")
    return HoldSpec(kind, name, namespace, **kwargs)


def build_specs(
    *,
    semaphores: Iterable[str] = (),
    weight: int = 1,
    mutexes: Iterable[str] = (),
    reads: Iterable[str] = (),
    writes: Iterable[str] = (),
    leases: Iterable[str] = (),
    barriers: Iterable[str] = (),
    gates: Iterable[str] = (),
) -> list[HoldSpec]:
    """Parse the flags of ``koncli run`` into specs in the global acquisition order.

    Raises:
        ConfigurationError: a bad reference, or the same object named twice (taking it
            twice could deadlock against itself).
    """
    specs = [parse_semaphore(ref, weight) for ref in semaphores]
    specs += [_spec("mutex", ref, "--mutex") for ref in mutexes]
    specs += [_spec("rwmutex", ref, "--read", mode="read") for ref in reads]
    specs += [_spec("rwmutex", ref, "--write", mode="write") for ref in writes]
    specs += [_spec("lease", ref, "--lease") for ref in leases]
    specs += [parse_barrier(ref) for ref in barriers]
    specs += [_spec("gate", ref, "--gate") for ref in gates]
    return order(specs)


def order(specs: Iterable[HoldSpec]) -> list[HoldSpec]:
    """Sort into the global order; reject duplicates.

    Raises:
        ConfigurationError: the same (kind, namespace, name) twice.
    """
    ordered = sorted(specs, key=HoldSpec.sort_key)
    seen: dict[tuple[str, str, str], HoldSpec] = {}
    for spec in ordered:
        key = (spec.kind, spec.namespace or "", spec.name)
        if key in seen:
            raise ConfigurationError(
                f"{spec.describe()} is given twice ({seen[key].describe()}); "
                "merge them (e.g. one --semaphore NAME:WEIGHT)"
            )
        seen[key] = spec
    return ordered


def child_env(holds: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Variables telling the child what koncli holds for it.

    ``KONDUCTOR_HOLDS`` is a JSON list of ``{kind, namespace, name, key, token}``;
    ``KONDUCTOR_FENCING_TOKEN`` is set when exactly one hold has a fencing token, which the
    child passes to downstream systems so they can reject a stale holder.
    """
    import json

    env = {"KONDUCTOR_HOLDS": json.dumps(list(holds), separators=(",", ":"))}
    tokens = [h["token"] for h in holds if h.get("token") is not None]
    if len(tokens) == 1:
        env["KONDUCTOR_FENCING_TOKEN"] = str(tokens[0])
    return env

"""One command group per primitive: the generic ``get``/``list``/``delete`` plus its verbs.

The verbs live in one module per family (:mod:`._semaphore` for semaphore, mutex and
rwmutex; :mod:`._barrier`; :mod:`._lease`; :mod:`._gate`; :mod:`._once`;
:mod:`._waitgroup`), each adding commands to the groups created here.
"""

from __future__ import annotations

from typing import Final

import click

from ._app import KoncliGroup
from ._generic import add_generic_commands
from ._objects import KINDS

_HELP: Final = {
    "semaphore": "Counting semaphores: N permits shared by weighted, prioritized holders.",
    "mutex": "Mutexes: one holder at a time, fair FIFO queue.",
    "rwmutex": "Reader/writer mutexes: many readers or one writer.",
    "lease": "Leases: one holder with a TTL (leader election).",
    "barrier": "Barriers: wait until the expected number of parties arrived.",
    "gate": "Gates: wait until every condition is met.",
    "once": "Once: run something exactly once across the cluster.",
    "waitgroup": "Wait groups: wait until a counter of pending work drops to zero.",
}


def _group(kind: str) -> KoncliGroup:
    group = KoncliGroup(name=kind, help=_HELP[kind])
    add_generic_commands(group, kind)
    return group


GROUPS: Final[dict[str, KoncliGroup]] = {kind: _group(kind) for kind in KINDS}


def _load_verbs() -> None:
    from . import _barrier, _gate, _lease, _once, _semaphore, _waitgroup  # noqa: F401


_load_verbs()

COMMANDS: Final[list[click.Command]] = list(GROUPS.values())

"""Sessions and claims: the per-client and per-participant records of the object model.

They are written only by the SDK (and deleted by the operator); koncli lists, shows and
deletes them with the generic commands every kind has, and has no verbs of its own for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import click

VERBS: Final[Mapping[str, Sequence[tuple[str, click.Command]]]] = {"session": (), "claim": ()}

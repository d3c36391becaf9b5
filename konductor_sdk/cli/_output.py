"""Rendering results as text (rich tables), JSON or YAML.

Commands build plain data (dicts, lists, scalars: what JSON can hold) and hand it here with
an optional text renderer; JSON/YAML output is that data, verbatim, so scripts see the
same fields whatever the terminal. Human messages go to stderr, results to stdout.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import attrs

from ._config import OutputFormat

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

TextRenderer = Callable[[Any], "RenderableType | str"]

# A table piped into a file must not be cut at 80 columns.
_PIPE_WIDTH = 200


def _console(file: IO[str]) -> Console:
    from rich.console import Console

    width = None if file.isatty() or os.environ.get("COLUMNS") else _PIPE_WIDTH
    return Console(file=file, width=width, highlight=False, soft_wrap=False)


def stdout_console() -> Console:
    return _console(sys.stdout)


def stderr_console() -> Console:
    return _console(sys.stderr)


def plain(value: Any) -> Any:
    """``value`` as JSON-compatible data (attrs objects, datetimes, enums, tuples...)."""
    if attrs.has(type(value)):
        return {k: plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def dumps(data: Any, fmt: OutputFormat) -> str:
    """JSON (indented, keys in order given) or YAML text of ``data``; not for ``text``."""
    if fmt == "json":
        return json.dumps(plain(data), indent=2) + "\n"
    import yaml

    return yaml.safe_dump(plain(data), sort_keys=False, default_flow_style=False)


def emit(data: Any, fmt: OutputFormat, text: TextRenderer | None = None) -> None:
    """Write a command's result to stdout in ``fmt``."""
    if fmt != "text":
        sys.stdout.write(dumps(data, fmt))
        sys.stdout.flush()
        return
    rendered = text(data) if text is not None else kv_table(plain(data))
    console = stdout_console()
    if isinstance(rendered, str):
        console.print(rendered, markup=False)
    else:
        console.print(rendered)


def message(text: str) -> None:
    """A human progress/diagnostic line on stderr (never parsed, never on stdout)."""
    stderr_console().print(text, markup=False, soft_wrap=True)  # one line, unwrapped


def cell(value: Any) -> str:
    """One table cell: scalars as themselves, small containers as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(plain(value), separators=(",", ":"))


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> Table:
    from rich.table import Table

    out = Table(*columns, title=title, title_justify="left", box=None, pad_edge=False)
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    return out


def kv_table(data: Any, *, title: str | None = None) -> Table:
    """Two columns, key and value, for a mapping (anything else as a single value)."""
    if not isinstance(data, Mapping):
        data = {"value": data}
    from rich.table import Table

    out = Table("FIELD", "VALUE", title=title, title_justify="left", box=None, pad_edge=False)
    for key, value in data.items():
        out.add_row(str(key), cell(value))
    return out


def entries_table(title: str, entries: Mapping[str, Any]) -> Table:
    """A map of entries (``status.holders`` and the like): one row per key, one column
    per field any entry has, in first-seen order."""
    columns: list[str] = []
    for entry in entries.values():
        if isinstance(entry, Mapping):
            columns += [str(k) for k in entry if str(k) not in columns]
    rows = []
    for key, entry in entries.items():
        fields = entry if isinstance(entry, Mapping) else {"value": entry}
        rows.append([key, *(fields.get(c) for c in columns)])
    return table(["KEY", *(c.upper() for c in columns)], rows, title=title)

"""The command tree: which module defines each command, loaded only when it is used.

``koncli --help`` and every single command import just what they run: the root group knows
its commands by name, module and one-line help (:data:`TOP_COMMANDS`), and each kind's group
(``koncli semaphore ...``) imports its verb module (:data:`VERB_MODULES`) the first time one
of its commands is looked up. A verb module only defines commands and lists them in its
``VERBS`` mapping; it never imports this module, so the tree has no import circles.

Each kind also answers to its plural and to the short names of its CRD
(``koncli sem list``), see :func:`._kinds.aliases`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import click

from ._app import EXIT_CODES_HELP, KoncliGroup, global_options
from ._kinds import KIND_HELP, KIND_NAMES, aliases, short_names

# Kind -> the module whose ``VERBS[kind]`` lists that kind's own commands.
VERB_MODULES: Final[Mapping[str, str]] = {
    "semaphore": "_semaphore",
    "mutex": "_semaphore",
    "rwmutex": "_semaphore",
    "lease": "_lease",
    "barrier": "_barrier",
    "gate": "_gate",
    "once": "_once",
    "waitgroup": "_waitgroup",
    "session": "_records",
    "claim": "_records",
}

# Name -> (module, attribute, one-line help shown by ``koncli --help``).
TOP_COMMANDS: Final[Mapping[str, tuple[str, str, str]]] = {
    "run": ("_run", "run_cmd", "Hold primitives while COMMAND runs; exit with its exit code."),
    "watch": ("_watchview", "watch_cmd", "Live table of primitives, redrawn on every change."),
    "create": ("_bulk", "create_cmd", "Create every object in FILE (all or nothing)."),
    "delete": ("_bulk", "delete_cmd", "Delete the objects in FILE, or KIND objects by selector."),
    "release": ("_bulk", "release_cmd", "Release many permits: records in FILE, or by selector."),
    "config": ("_config_cmd", "config_group", "Inspect the configuration and where it came from."),
    "completion": ("_complete", "completion_cmd", "Print the shell completion script."),
}


def _load(module: str, attribute: str) -> Any:
    return getattr(importlib.import_module(f"{__package__}.{module}"), attribute)


class KindGroup(KoncliGroup):
    """``koncli <kind> ...``: the generic get/list/delete plus the kind's verbs, loaded on
    first use."""

    def __init__(self, kind: str) -> None:
        super().__init__(name=kind, help=KIND_HELP[kind], short_help=KIND_HELP[kind])
        self.kind = kind
        self._loaded = False

    def _load_verbs(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from ._generic import generic_commands

        verbs: Mapping[str, Sequence[tuple[str, click.Command]]]
        verbs = _load(VERB_MODULES[self.kind], "VERBS")
        for name, command in (*generic_commands(self.kind), *verbs[self.kind]):
            self.add_command(command, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_verbs()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load_verbs()
        return super().get_command(ctx, cmd_name)


class RootGroup(KoncliGroup):
    """The root: kinds (and their aliases) and the top-level commands, loaded by name."""

    def _kind(self, kind: str) -> click.Command:
        if kind not in self.commands:
            self.add_command(KindGroup(kind))  # gets the global options, like every command
        return self.commands[kind]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*KIND_NAMES, *TOP_COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in KIND_NAMES:
            return self._kind(cmd_name)
        if cmd_name in TOP_COMMANDS:
            if cmd_name not in self.commands:
                module, attribute, _ = TOP_COMMANDS[cmd_name]
                self.add_command(_load(module, attribute), cmd_name)
            return self.commands[cmd_name]
        kind = aliases().get(cmd_name)
        return self._kind(kind) if kind is not None else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the static table: listing the commands must not import them all.
        short = {kind: short_names(kind) for kind in KIND_NAMES}
        kinds = [
            (f"{k} ({', '.join(short[k])})" if short[k] else k, KIND_HELP[k]) for k in KIND_NAMES
        ]
        with formatter.section("Primitives (and their short names)"):
            formatter.write_dl(kinds)
        with formatter.section("Commands"):
            formatter.write_dl([(name, help) for name, (_, _, help) in TOP_COMMANDS.items()])


@click.group(
    cls=RootGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@global_options
@click.version_option(package_name="konductor", prog_name="koncli")
def cli() -> None:
    """koncli: Kubernetes-native semaphores, mutexes, barriers, leases and gates.

    Every wait is driven by a watch (no polling) and waits forever unless --timeout is
    given. Ctrl-C during a wait leaves the queue and releases anything acquired.
    """

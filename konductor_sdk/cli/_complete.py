"""Shell completion: click's scripts for bash/zsh/fish, plus names of existing objects.

``koncli completion bash`` prints the script (it is click's own, driven by the
``_KONCLI_COMPLETE`` variable). Name arguments complete by listing the objects through the
SDK, honouring ``-n``/``--kubeconfig``/``--context`` typed earlier on the line; the lookup
is bounded by a short timeout and silent on any error, because a shell must never hang
or print a traceback on <TAB>.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import anyio
import click
from click.shell_completion import CompletionItem, get_completion_class

from ._app import open_client, state
from ._config import Settings

COMPLETION_TIMEOUT = 2.0
SETUP_TIMEOUT = 10.0
SHELLS = ("bash", "zsh", "fish")


async def _names(kind: str, cfg: Settings) -> list[str]:
    from ._objects import resource_for

    # The bound is on the request: importing the SDK's HTTP stack and reading the
    # kubeconfig (lazy since koncli starts fast) must not eat it on a slow machine; they
    # get a generous bound of their own.
    with anyio.fail_after(SETUP_TIMEOUT):
        async with open_client(cfg) as client:
            with anyio.fail_after(COMPLETION_TIMEOUT):
                listed = await client.store.list(resource_for(kind), client.namespace)
    return sorted(obj.name for obj in listed.items)


def complete_names(
    kind: str,
) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """A ``shell_complete`` callback offering the names of existing ``kind`` objects."""

    def complete(
        ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        logging.disable(logging.CRITICAL)
        try:
            names = anyio.run(_names, kind, state(ctx).settings(), backend="asyncio")
        except BaseException:
            return []
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]

    return complete


def script(root: click.Command, shell: str, prog_name: str = "koncli") -> str:
    """The completion script of ``root`` for ``shell`` (what ``eval "$(koncli completion
    bash)"`` runs)."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - the Choice below only allows known shells
        raise click.BadParameter(f"unsupported shell {shell!r}")
    complete_var = "_" + prog_name.replace("-", "_").upper() + "_COMPLETE"
    return cls(root, {}, prog_name, complete_var).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), required=False)
def completion_cmd(shell: str | None) -> None:
    """Print the shell completion script (names of existing objects complete too).

    \b
    bash:  eval "$(koncli completion bash)"      (e.g. in ~/.bashrc)
    zsh:   eval "$(koncli completion zsh)"       (e.g. in ~/.zshrc)
    fish:  koncli completion fish > ~/.config/fish/completions/koncli.fish
    """
    if shell is None:
        shell = os.path.basename(os.environ.get("SHELL", "")) or "bash"
        if shell not in SHELLS:
            raise click.UsageError(f"cannot guess the shell from $SHELL; pass one of {SHELLS}")
    root = click.get_current_context().find_root().command
    click.echo(script(root, shell), nl=False)

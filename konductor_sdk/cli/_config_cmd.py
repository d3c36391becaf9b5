"""``koncli config``: show the resolved settings and where each one came from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from . import _app, _output
from ._complete import completion_cmd
from ._config import ENV_VARS, Flags, config_path


@click.group("config", cls=_app.KoncliGroup)
def config_group() -> None:
    """Inspect the configuration (flags > environment > config file > defaults)."""


@config_group.command("view")
def view_cmd() -> None:
    """Show every setting, its value and its source (flag, env, config, default)."""
    cfg = _app.settings()
    data: dict[str, Any] = {
        "configFile": str(cfg.config_path) if cfg.config_path else None,
        "namespace": cfg.namespace,
        "output": cfg.output,
        "context": cfg.context,
        "kubeconfig": cfg.kubeconfig,
        "ttl": dict(cfg.ttls),
        "sources": dict(cfg.sources),
    }

    def text(d: dict[str, Any]) -> Any:
        rows = [
            [
                key,
                d[key] if key != "ttl" else d["ttl"],
                cfg.sources.get(key, "-"),
                ENV_VARS.get(key, ""),
            ]
            for key in ("namespace", "output", "context", "kubeconfig", "ttl")
        ]
        title = f"config file: {d['configFile'] or '(none)'}"
        return _output.table(["SETTING", "VALUE", "SOURCE", "ENV"], rows, title=title)

    _output.emit(data, cfg.output, text)


@config_group.command("path")
def path_cmd() -> None:
    """Print the config file path koncli reads (it may not exist)."""
    flags = Flags(**_app.state().flags)
    click.echo(str(config_path(flags, os.environ, Path.home())[0]))


COMMANDS = [config_group, completion_cmd]

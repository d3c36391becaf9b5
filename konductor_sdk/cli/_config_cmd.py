"""``koncli config``: show the resolved settings and where each one came from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from . import _app, _output
from ._config import ENV_VARS, Flags, config_path, effective_kubeconfig


@click.group("config", cls=_app.KoncliGroup)
def config_group() -> None:
    """Inspect the configuration (flags > environment > config file > defaults)."""


@config_group.command("view")
def view_cmd() -> None:
    """Show every setting, its value and its source (flag, env, config, default).

    The kubeconfig row names the file the SDK will actually read and why ($KUBECONFIG,
    in-cluster, ~/.kube/config); an unset namespace or context is decided by the SDK
    at connect time (the pod's, then the kubeconfig context's).
    """
    cfg = _app.settings()
    kubeconfig, kubeconfig_from = effective_kubeconfig(cfg, os.environ, Path.home())
    sources: dict[str, str] = dict(cfg.sources)
    if sources.get("kubeconfig") == "default" and kubeconfig_from != "default":
        sources["kubeconfig"] = "env" if kubeconfig_from.startswith("$") else "in-cluster"
    data: dict[str, Any] = {
        "configFile": str(cfg.config_path) if cfg.config_path else None,
        "namespace": cfg.namespace,
        "output": cfg.output,
        "context": cfg.context,
        "kubeconfig": kubeconfig,
        "kubeconfigFrom": kubeconfig_from,
        "ttl": dict(cfg.ttls),
        "retryBudget": cfg.retry_budget,
        "sources": sources,
    }
    env_names = {**ENV_VARS, "kubeconfig": f"{ENV_VARS['kubeconfig']}, KUBECONFIG"}
    unset = {
        "namespace": "(the pod's, else the context's, else default)",
        "context": "(the kubeconfig's current-context)",
    }

    def text(d: dict[str, Any]) -> Any:
        keys = {"retry_budget": "retryBudget"}
        rows = [
            [
                key,
                d[keys.get(key, key)] if d[keys.get(key, key)] is not None else unset[key],
                sources.get(key, "-"),
                env_names.get(key, ""),
            ]
            for key in ("namespace", "output", "context", "kubeconfig", "ttl", "retry_budget")
        ]
        title = f"config file: {d['configFile'] or '(none)'}"
        return _output.table(["SETTING", "VALUE", "SOURCE", "ENV"], rows, title=title)

    _output.emit(data, cfg.output, text)


@config_group.command("path")
def path_cmd() -> None:
    """Print the config file path koncli reads (it may not exist)."""
    flags = Flags(**_app.state().flags)
    click.echo(str(config_path(flags, os.environ, Path.home())[0]))

"""Running the installed ``koncli`` as a subprocess against the test cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

import anyio

KONCLI = str(Path(sys.executable).with_name("koncli"))

# Variables of the developer's shell that would change what koncli does.
_INHERITED_PREFIXES = ("KONDUCTOR_", "POD_", "KUBERNETES_", "_KONCLI")


class Result(NamedTuple):
    code: int
    stdout: str
    stderr: str


def koncli_env(kubeconfig: Path, xdg_config_home: Path | str, **extra: str) -> dict[str, str]:
    """This process's environment without anything that configures koncli, pointed at
    ``kubeconfig``, a config home of the test's own, and ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    return base | {
        "KUBECONFIG": str(kubeconfig),
        "XDG_CONFIG_HOME": str(xdg_config_home),
        **extra,
    }


async def koncli(env: dict[str, str], *args: str) -> Result:
    """Run ``koncli *args`` to completion."""
    done = await anyio.run_process([KONCLI, *args], env=env, check=False)
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

"""Running the installed ``koncli`` as a subprocess against the test cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import anyio

from konductor_sdk import Client
from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.objects import CLAIM, KObject, ResourceKind

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


def grants(obj: KObject) -> dict[str, dict[str, Any]]:
    """The grants of an object of the semaphore family by their key ``slot#token`` (the key
    of ``Permit.key`` and of koncli's output; ``status.holders`` is keyed by slot alone)."""
    return {
        f"{slot}#{entry['token']}": dict(entry)
        for slot, entry in (obj.status.get("holders") or {}).items()
    }


async def waiting(client: Client, kind: ResourceKind, name: str) -> list[KObject]:
    """The claims queued on ``kind``/``name`` (object model v2: the queue is Claims), minus
    those a grant names (granted, not deleted yet)."""
    from konductor_sdk._kernel.claims import target_selector

    claims = await client.store.list(
        CLAIM, client.namespace, field_selector=target_selector(kind, name)
    )
    try:
        obj = await client.store.get(kind, client.namespace, name)
    except NotFoundError:
        return list(claims.items)
    granted = {e.get("claim") for e in (obj.status.get("holders") or {}).values()}
    return [c for c in claims.items if c.name not in granted]

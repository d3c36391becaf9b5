"""The ``... -- COMMAND`` forms of docs/cli.md, exactly as documented: ``once run NAME --
CMD`` and ``lease elect NAME --ttl 5 -- CMD`` (options before ``--``; a ``--`` is never
taken for the command), against the real API server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _cli_support import koncli, koncli_env

from konductor_sdk import Client, Identity
from konductor_sdk.lease import Lease
from konductor_sdk.once import Once

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(kubeconfig: Path, namespace: str, tmp_path: Path) -> dict[str, str]:
    return koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)


@pytest.fixture
async def sdk(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="test-sdk")
    ) as client:
        yield client


async def test_once_run_name_dash_dash_command(env: dict[str, str], sdk: Client) -> None:
    first = await koncli(env, "once", "run", "db-schema", "--", "sh", "-c", "echo ran")
    assert (first.code, first.stdout) == (0, "ran\n"), first.stderr
    assert (await Once("db-schema", client=sdk).status()).phase == "Done"

    again = await koncli(env, "once", "run", "db-schema", "--", "sh", "-c", "echo ran")
    assert (again.code, again.stdout) == (0, ""), again.stderr
    assert "already done" in again.stderr

    # Options between NAME and --; a -- inside COMMAND is COMMAND's.
    args = ("sh", "-c", 'echo "$@"', "sh", "--", "x")
    with_ttl = await koncli(env, "once", "run", "other", "--ttl", "5", "--", *args)
    assert (with_ttl.code, with_ttl.stdout) == (0, "-- x\n"), with_ttl.stderr

    # A failing command is recorded as failed with its own exit code, not as "--".
    failed = await koncli(env, "once", "run", "broken", "--", "sh", "-c", "exit 3")
    assert failed.code == 3, failed.stderr
    status = await Once("broken", client=sdk).status()
    assert status.phase == "Failed"
    assert "--" not in str(status)

    # Nothing but --: a usage error before anything is written.
    empty = await koncli(env, "once", "run", "nothing", "--")
    assert empty.code == 2
    assert "COMMAND" in empty.stderr


async def test_lease_elect_name_ttl_dash_dash_command(env: dict[str, str], sdk: Client) -> None:
    code = "import os; print(os.environ['KONDUCTOR_FENCING_TOKEN'])"
    done = await koncli(
        env, "lease", "elect", "leader", "--ttl", "5", "--", sys.executable, "-c", code
    )
    assert done.code == 0, done.stderr
    assert int(done.stdout) >= 1
    status = await Lease("leader", client=sdk).status()
    assert status.holder is None  # released when COMMAND exited
    assert status.fencing_token == int(done.stdout)

    exit_code = await koncli(
        env, "lease", "elect", "leader", "--ttl", "5", "--", "sh", "-c", "exit 7"
    )
    assert exit_code.code == 7, exit_code.stderr

"""A script using the blocking facade exits cleanly without closing anything itself."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

pytestmark = pytest.mark.anyio

SCRIPT = textwrap.dedent(
    """
    import atexit
    import sys

    from konductor_sdk.sync import Semaphore, default_client

    clients = []


    def report():  # registered before the portal's own handler, so it runs after it
        (client,) = clients
        session = client._async._api_client.rest_client.pool_manager
        print("closed", client._async._closed, session.closed)


    atexit.register(report)

    sem = Semaphore("exit-sem", permits=2, namespace=sys.argv[1])
    with sem as permit:
        print("held", permit.token)
    permit = sem.acquire()
    permit.release()
    print("again", permit.token, sem.status().in_use)
    clients.append(default_client())  # the one the semaphore used
    """
)


async def test_default_client_is_closed_at_exit(kubeconfig: Path, namespace: str) -> None:
    # The primitives use the portal loop's default client; nothing in the script closes it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KUBERNETES_"))}
    env["KUBECONFIG"] = str(kubeconfig)
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-W", "error::ResourceWarning", "-c", SCRIPT, namespace],
            env=env,
            check=False,
        )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines == ["held 1", "again 2 0", "closed True True"]
    # An unclosed session or socket would show as "Exception ignored ... ResourceWarning".
    assert stderr == ""

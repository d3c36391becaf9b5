"""The initContainer pattern end to end: ``koncli ... --for-pod`` holds a permit for its pod,
the operator (a separate process) releases it when the Pod object is deleted."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from _cli_support import grants, koncli, koncli_env
from _operator_support import start_operator, watch_until

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import POD, SEMAPHORE
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


async def test_for_pod_permit_is_released_when_its_pod_is_deleted(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="test")
    ) as sdk:
        await Semaphore("gpu", permits=1, client=sdk).create()
        pod = await sdk.store.create(
            POD,
            namespace,
            {
                "metadata": {"name": "trainer-0"},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        )
        env = koncli_env(
            kubeconfig,
            tmp_path / "xdg",
            POD_NAME="trainer-0",
            POD_NAMESPACE=namespace,
            POD_UID=pod.uid,
        )
        # What the initContainer runs; it exits, the permit stays with the pod.
        done = await koncli(
            env, "-n", namespace, "semaphore", "acquire", "gpu", "--for-pod", "-o", "json"
        )
        assert done.code == 0, done.stderr
        key = json.loads(done.stdout)["key"]

        op = start_operator(kubeconfig, namespace, tmp_path)
        try:
            obj = await sdk.store.get(SEMAPHORE, namespace, "gpu")
            assert key in grants(obj)
            # The pod still exists: the operator must leave the permit alone.
            await sdk.store.delete(POD, namespace, "trainer-0")
            with anyio.fail_after(60):
                await watch_until(
                    sdk,
                    SEMAPHORE,
                    namespace,
                    "gpu",
                    lambda o: o is not None and key not in grants(o),
                )
            final = await sdk.store.get(SEMAPHORE, namespace, "gpu")
            assert final.status.get("inUse", 0) == 0
        finally:
            op.stop()
        assert op.proc.returncode in (0, -15), op.log_tail()

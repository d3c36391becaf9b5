"""The documented Kubernetes examples (``examples/k8s``) are valid and their koncli commands
work: every manifest is created on the real API server, then the koncli invocations of the
pods are run here with the downward-API variables those pods would get (no kubelet runs
on the test control plane, so the containers themselves never start).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _cli_support import grants, koncli, koncli_env
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.utils import create_from_dict

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import POD, SEMAPHORE, SESSION

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "k8s"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


@pytest.fixture
async def sdk(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="test-sdk")
    ) as client:
        yield client


def pod_env(kubeconfig: Path, namespace: str, pod_name: str, uid: str) -> dict[str, str]:
    return koncli_env(
        kubeconfig, "/nonexistent", POD_NAME=pod_name, POD_NAMESPACE=namespace, POD_UID=uid
    )


async def test_every_example_manifest_is_accepted(
    api_client: ApiClient, sdk: Client, namespace: str
) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in documents(path.name):
            if doc["apiVersion"].startswith("sync.konductor.io/"):
                await sdk.store.create(SEMAPHORE, namespace, doc)
            else:
                await create_from_dict(api_client, doc, namespace=namespace)
    assert (await sdk.store.get(SEMAPHORE, namespace, "gpu-pool")).spec["permits"] == 4


async def test_initcontainer_pattern(kubeconfig: Path, sdk: Client, namespace: str) -> None:
    (semaphore,) = documents("semaphore.yaml")
    await sdk.store.create(SEMAPHORE, namespace, semaphore)
    (manifest,) = documents("pod-initcontainer.yaml")
    pod = await sdk.store.create(POD, namespace, manifest)
    env = pod_env(kubeconfig, namespace, pod.name, pod.uid)

    init_args = manifest["spec"]["initContainers"][0]["args"]
    code, key, err = await koncli(env, *init_args)
    assert code == 0, err
    entry = grants(await sdk.store.get(SEMAPHORE, namespace, "gpu-pool"))[key.strip()]
    # The pod and the TTL are the session's: the grant names the session it lives with.
    session = (await sdk.store.get(SESSION, namespace, entry["session"])).spec
    assert session["pod"] == {"name": pod.name, "namespace": namespace, "uid": pod.uid}
    assert (entry["weight"], session["ttlSeconds"]) == (2, 0)

    # The main container's release line, by holder id.
    script = manifest["spec"]["containers"][0]["args"][0]
    (line,) = [ln.strip() for ln in script.splitlines() if ln.strip().startswith("koncli ")]
    args = line.replace('"$POD_NAME:$POD_UID"', f"{pod.name}:{pod.uid}").split()[1:]
    code, _, err = await koncli(env, *args)
    assert code == 0, err
    assert not (await sdk.store.get(SEMAPHORE, namespace, "gpu-pool")).status.get("holders")


async def test_job_run_pattern(kubeconfig: Path, sdk: Client, namespace: str) -> None:
    (semaphore,) = documents("semaphore.yaml")
    await sdk.store.create(SEMAPHORE, namespace, semaphore)
    (job,) = documents("job-run.yaml")
    args = list(job["spec"]["template"]["spec"]["containers"][0]["args"])
    args[args.index("python")] = sys.executable
    env = pod_env(kubeconfig, namespace, "train-run-x7k2p", "0b6f-uid")

    code, out, err = await koncli(env, *args)
    assert code == 0, err
    holds_line = next(line for line in out.splitlines() if line.startswith("holds: "))
    assert "'kind': 'semaphore', 'namespace': " in holds_line
    assert "'name': 'gpu-pool'" in holds_line
    assert "fencing token: 1" in out
    assert not (await sdk.store.get(SEMAPHORE, namespace, "gpu-pool")).status.get("holders")

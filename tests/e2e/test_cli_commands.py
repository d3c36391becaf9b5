"""koncli commands end to end: exit codes, --for-pod, bulk files, completion, JSON output.

Every test runs the installed ``koncli`` against the real API server; state is checked on
the server through the SDK client of the test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from _cli_support import Result, grants, koncli, koncli_env, waiting

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.objects import (
    LEASE,
    MUTEX,
    POD,
    RWMUTEX,
    SEMAPHORE,
    SESSION,
    ResourceKind,
)
from konductor_sdk.semaphore import Semaphore

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(kubeconfig: Path, namespace: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a koncli process: this test's cluster and namespace, no config."""
    return koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)


@pytest.fixture
async def sdk(kubeconfig: Path, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder="test-sdk")
    ) as client:
        yield client


async def exists(sdk: Client, kind: ResourceKind, name: str) -> bool:
    try:
        await sdk.store.get(kind, sdk.namespace, name)
    except NotFoundError:
        return False
    return True


async def holders(sdk: Client, kind: ResourceKind, name: str) -> dict[str, Any]:
    """The grants of ``kind``/``name`` by key (``slot#token``)."""
    return grants(await sdk.store.get(kind, sdk.namespace, name))


async def session_of(sdk: Client, entry: dict[str, Any]) -> dict[str, Any]:
    """The spec of the Session a grant lives with (its pod and TTL are there, not in it)."""
    return dict((await sdk.store.get(SESSION, sdk.namespace, entry["session"])).spec)


async def test_exit_codes(env: dict[str, str], sdk: Client) -> None:
    sem = Semaphore("gpu", permits=1, client=sdk)
    await sem.create()
    permit = await sem.acquire(ttl=60)
    try:
        cases: list[tuple[int, tuple[str, ...], dict[str, str]]] = [
            (4, ("semaphore", "acquire", "gpu", "--ttl", "30", "--nowait"), {}),
            (3, ("semaphore", "acquire", "gpu", "--ttl", "30", "--timeout", "0.5"), {}),
            (2, ("semaphore", "acquire", "gpu"), {}),  # detached needs --ttl
            (2, ("run", "--semaphore", "gpu"), {}),  # no command
            (2, ("run", "--semaphore", "gpu:0", "--", "true"), {}),
            (2, ("-o", "xml", "semaphore", "list"), {}),
            (2, ("semaphore", "list"), {"KONDUCTOR_TTL": "soon"}),
            (2, ("no-such-command",), {}),
            (1, ("semaphore", "get", "nope"), {}),
            (1, ("semaphore", "release", "gpu", "no-such-key"), {}),
            (127, ("run", "-q", "--mutex", "m", "--", "koncli-no-such-program"), {}),
        ]
        results: dict[tuple[str, ...], Result] = {}
        limiter = anyio.CapacityLimiter(4)

        async def one(args: tuple[str, ...], extra: dict[str, str]) -> None:
            async with limiter:
                results[args] = await koncli(env | extra, *args)

        async with anyio.create_task_group() as tg:  # independent cases: run side by side
            for _, args, extra in cases:
                tg.start_soon(one, args, extra)
        for expected, args, _ in cases:
            done = results[args]
            assert done.code == expected, (args, done.stderr)
            if expected not in (0, 2):
                assert done.stderr.startswith("koncli: "), (args, done.stderr)
        # Nothing leaked: only the SDK's permit, no waiter left behind by the timeout.
        assert list(await holders(sdk, SEMAPHORE, "gpu")) == [permit.key]
        assert await waiting(sdk, SEMAPHORE, "gpu") == []
        assert await holders(sdk, MUTEX, "m") == {}
    finally:
        await permit.release()


async def test_help_documents_the_exit_codes(env: dict[str, str]) -> None:
    done = await koncli(env, "--help")
    assert done.code == 0
    for line in ("3    --timeout", "4    would block", "5    lost", "130  interrupted"):
        assert line in done.stdout


async def test_for_pod_records_the_pod_and_ttl_zero(
    env: dict[str, str], sdk: Client, namespace: str, tmp_path: Path
) -> None:
    pod = await sdk.store.create(
        POD,
        namespace,
        {
            "metadata": {"name": "init-demo"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        },
    )
    await Semaphore("gpu", permits=2, client=sdk).create()
    pod_env = env | {"POD_NAME": "init-demo", "POD_NAMESPACE": namespace, "POD_UID": pod.uid}
    ref = {"name": "init-demo", "namespace": namespace, "uid": pod.uid}

    sem_grant = await koncli(pod_env, "semaphore", "acquire", "gpu", "--for-pod", "-o", "json")
    assert sem_grant.code == 0, sem_grant.stderr
    grant = json.loads(sem_grant.stdout)
    assert (grant["pod"], grant["ttlSeconds"]) == (ref, 0)
    entry = (await holders(sdk, SEMAPHORE, "gpu"))[grant["key"]]
    session = await session_of(sdk, entry)
    assert (session["pod"], session["ttlSeconds"]) == (ref, 0)
    assert entry["holder"] == f"init-demo:{pod.uid}"

    # Without POD_UID koncli learns it by reading its own Pod (RBAC permitting).
    no_uid = {k: v for k, v in pod_env.items() if k != "POD_UID"}
    mutex_grant = await koncli(no_uid, "mutex", "lock", "m", "--for-pod", "-o", "json")
    assert mutex_grant.code == 0, mutex_grant.stderr
    mutex_entry = (await holders(sdk, MUTEX, "m"))[json.loads(mutex_grant.stdout)["key"]]
    assert (await session_of(sdk, mutex_entry))["pod"] == ref

    # Outside a pod --for-pod is a usage error, and --for-pod excludes --ttl.
    assert (await koncli(env, "mutex", "lock", "m2", "--for-pod")).code == 2
    assert (await koncli(pod_env, "mutex", "lock", "m2", "--for-pod", "--ttl", "9")).code == 2
    assert not await exists(sdk, MUTEX, "m2")

    # Bulk release of the grants, from what acquire printed.
    grants = tmp_path / "grants.json"
    grants.write_text(json.dumps([grant, json.loads(mutex_grant.stdout)]))
    released = await koncli(env, "release", "-f", str(grants), "-o", "json")
    assert released.code == 0, released.stderr
    assert [r["result"] for r in json.loads(released.stdout)] == ["released", "released"]
    assert await holders(sdk, SEMAPHORE, "gpu") == {}
    assert await holders(sdk, MUTEX, "m") == {}


MANIFESTS = """\
apiVersion: sync.konductor.io/v1alpha1
kind: Semaphore
metadata: {name: gpu-pool, labels: {team: ml}}
spec: {permits: 4}
---
kind: Semaphore
metadata: {name: cpu-pool, labels: {team: ml}}
spec: {permits: 8}
---
kind: Mutex
metadata: {name: db-migrate}
---
kind: RWMutex
metadata: {name: dataset}
spec: {maxReaders: 16}
---
kind: Lease
metadata: {name: scheduler}
spec: {ttlSeconds: 20}
"""
CREATED = [
    (SEMAPHORE, "gpu-pool"),
    (SEMAPHORE, "cpu-pool"),
    (MUTEX, "db-migrate"),
    (RWMUTEX, "dataset"),
    (LEASE, "scheduler"),
]


async def test_bulk_create_and_delete_from_a_file(
    env: dict[str, str], sdk: Client, tmp_path: Path
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(MANIFESTS)

    created = await koncli(env, "create", "-f", str(path), "-o", "json")
    assert created.code == 0, created.stdout
    assert [(r["name"], r["result"]) for r in json.loads(created.stdout)] == [
        (name, "created") for _, name in CREATED
    ]
    for kind, name in CREATED:
        assert await exists(sdk, kind, name)
    assert (await sdk.store.get(SEMAPHORE, sdk.namespace, "gpu-pool")).spec["permits"] == 4

    again = await koncli(env, "create", "-f", str(path))
    assert again.code == 1  # every item reported, each one failed
    assert again.stdout.count("already exists") == len(CREATED)
    assert (await koncli(env, "create", "-f", str(path), "--skip-existing")).code == 0

    # A bad item anywhere fails the whole file before anything is written.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: Mutex\nmetadata: {name: fine}\n---\nkind: Mutex\nmetadata: {name: Bad_Name}\n"
    )
    rejected = await koncli(env, "create", "-f", str(bad))
    assert rejected.code == 2
    assert "item 2: metadata.name" in rejected.stderr
    assert not await exists(sdk, MUTEX, "fine")

    by_label = await koncli(env, "delete", "semaphore", "-l", "team=ml", "-o", "yaml")
    assert by_label.code == 0, by_label.stderr
    assert sorted(r["name"] for r in yaml.safe_load(by_label.stdout)) == ["cpu-pool", "gpu-pool"]

    deleted = await koncli(env, "delete", "-f", str(path), "--ignore-not-found")
    assert deleted.code == 0, deleted.stderr
    for kind, name in CREATED:
        assert not await exists(sdk, kind, name)


async def test_shell_completion_scripts_and_object_names(env: dict[str, str], sdk: Client) -> None:
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        script = await koncli(env, "completion", shell)
        assert script.code == 0
        assert "_KONCLI_COMPLETE" in script.stdout
        assert marker in script.stdout

    for name in ("alpha", "beta"):
        await Semaphore(name, permits=1, client=sdk).create()

    async def complete(words: str, cword: int, extra: dict[str, str]) -> Result:
        return await koncli(
            env
            | {"_KONCLI_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
            | extra
        )

    everything = await complete("koncli semaphore get ", 3, {})
    assert everything.code == 0
    assert {"plain,alpha", "plain,beta"} <= set(everything.stdout.split())
    prefix = await complete("koncli semaphore status al", 3, {})
    assert prefix.stdout.split() == ["plain,alpha"]
    # A broken cluster config completes nothing, silently.
    broken = await complete("koncli semaphore get ", 3, {"KUBECONFIG": "/nonexistent"})
    assert (broken.code, broken.stdout.strip(), broken.stderr) == (0, "", "")


async def test_json_and_yaml_outputs_parse(env: dict[str, str], sdk: Client) -> None:
    sem = Semaphore("gpu", permits=3, client=sdk)
    await sem.create()
    permit = await sem.acquire(weight=2, ttl=60)
    try:
        status = json.loads((await koncli(env, "semaphore", "status", "gpu", "-o", "json")).stdout)
        assert (status["limit"], status["in_use"], status["available"]) == (3, 2, 1)
        assert [h["key"] for h in status["holders"]] == [permit.key]

        listed = json.loads((await koncli(env, "semaphore", "list", "-o", "json")).stdout)
        assert listed["kind"] == "List"
        assert [i["metadata"]["name"] for i in listed["items"]] == ["gpu"]

        got = yaml.safe_load((await koncli(env, "semaphore", "get", "gpu", "-o", "yaml")).stdout)
        assert got["status"]["holders"][str(permit.slots[0])]["weight"] == 2

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: sem.acquire(weight=2, ttl=60))  # waits behind the permit
            with anyio.fail_after(30):
                async for seen in sem.changes():
                    if seen.waiters:
                        break
            # Sessions and claims are records, not primitives: watch shows them when asked.
            rows = json.loads((await koncli(env, "watch", "--once", "-o", "json")).stdout)
            assert [(r["kind"], r["name"], r["holders"], r["waiters"]) for r in rows] == [
                ("semaphore", "gpu", ["test-sdk"], 1)
            ]
            claims = json.loads(
                (await koncli(env, "watch", "claim", "--once", "-o", "json")).stdout
            )
            assert [r["kind"] for r in claims] == ["claim"]
            table = (await koncli(env, "semaphore", "list")).stdout.splitlines()
            assert table[1].split()[:5] == ["semaphore", "gpu", "Ready", "test-sdk", "1"]
            shown = (await koncli(env, "semaphore", "get", "gpu")).stdout
            assert "waiters (1, in service order)" in shown
            tg.cancel_scope.cancel()
    finally:
        await permit.release()


async def test_config_file_and_environment_reach_the_command(
    env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('namespace = "from-file"\noutput = "yaml"\n[ttl]\nsemaphore = 12\n')
    cfg_env = env | {"KONDUCTOR_CONFIG": str(config)}

    view = yaml.safe_load((await koncli(cfg_env, "config", "view")).stdout)
    assert (view["namespace"], view["output"], view["ttl"]["semaphore"]) == (
        namespace,  # KONDUCTOR_NAMESPACE beats the file
        "yaml",
        12,
    )
    assert view["sources"]["namespace"] == "env"
    flags = json.loads(
        (await koncli(cfg_env, "config", "view", "-n", "flag-ns", "-o", "json")).stdout
    )
    assert (flags["namespace"], flags["sources"]["namespace"]) == ("flag-ns", "flag")

    config.write_text("output = 'xml'\n")
    broken = await koncli(cfg_env, "semaphore", "list")
    assert broken.code == 2
    assert "output must be one of" in broken.stderr

"""Barrier and Once across real processes: 64 parties as tasks and 8 separate processes
(blocking API) open one barrier together; a Once runner killed with SIGKILL is replaced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.claims import claim_queue
from konductor_sdk._kernel.objects import BARRIER, ONCE
from konductor_sdk.barrier import Barrier
from konductor_sdk.once import Once

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., Client]

BARRIER_CHILD = textwrap.dedent(
    """
    import json, sys
    from konductor_sdk import Identity
    from konductor_sdk.sync import Client
    from konductor_sdk.sync.barrier import Barrier

    kubeconfig, namespace, holder, expected = sys.argv[1:5]
    with Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder)) as client:
        barrier = Barrier("together", expected=int(expected), client=client, party=holder, ttl=120)
        rank = barrier.wait()
    print(json.dumps({"holder": holder, "rank": rank, "pid": __import__("os").getpid()}))
    """
)

ONCE_CHILD = textwrap.dedent(
    """
    import sys, time
    from konductor_sdk import Identity
    from konductor_sdk.sync import Client, Once

    kubeconfig, namespace = sys.argv[1:3]
    client = Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity("doomed"))

    def migrate():
        print("started", flush=True)
        time.sleep(3600)

    Once("migrate", client=client, ttl=2).run(migrate)
    """
)


@pytest.fixture
async def make_client(kubeconfig: Path, namespace: str) -> AsyncIterator[MakeClient]:
    """Clients in the test's namespace with distinct identities, closed at teardown."""
    made: list[Client] = []

    def factory(holder: str) -> Client:
        client = Client(kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder))
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


async def test_64_tasks_and_8_processes_open_together(
    kubeconfig: Path, namespace: str, make_client: MakeClient
) -> None:
    expected = 64 + 8
    clients = [make_client(holder=f"tasks-{i}") for i in range(4)]
    ranks: dict[str, int] = {}

    async def task_party(i: int) -> None:
        party = f"task-{i}"
        # A generous TTL: on a shared, overloaded 2-core machine renewals can be slow;
        # a party that cannot renew in time rightly gives up, which is not under test.
        ranks[party] = await Barrier(
            "together", expected=expected, client=clients[i % 4], party=party, ttl=120
        ).wait()

    async def process_party(i: int) -> None:
        holder = f"process-{i}"
        argv = [sys.executable, "-c", BARRIER_CHILD, str(kubeconfig), namespace, holder]
        result = await anyio.run_process([*argv, str(expected)], env=child_env(), check=False)
        assert result.returncode == 0, result.stderr.decode()
        line = json.loads(result.stdout.decode().strip().splitlines()[-1])
        assert line["pid"] != os.getpid()
        ranks[line["holder"]] = line["rank"]

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(process_party, i)
            for i in range(64):
                tg.start_soon(task_party, i)
    assert len(ranks) == expected
    assert sorted(ranks.values()) == list(range(expected))
    # The process whose arrival opened it writes its arrival claim after telling its parties.
    async with claim_queue(clients[0], BARRIER, "together") as queue:
        while sum(len(c.spec.get("parties") or ()) for c in queue.ordered()) < expected:
            await queue.next_change().wait()
    status = await Barrier("together", expected=None, client=clients[0]).status()
    assert (status.phase, status.arrived, status.generation) == ("Open", expected, 1)
    assert {a.party: a.index for a in status.arrivals} == ranks


async def test_a_once_runner_killed_with_sigkill_is_replaced(
    kubeconfig: Path, namespace: str, make_client: MakeClient
) -> None:
    argv = [sys.executable, "-c", ONCE_CHILD, str(kubeconfig), namespace]
    async with await anyio.open_process(
        argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as process:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(60):
            while b"started" not in output:
                output += await process.stdout.receive()
        process.send_signal(signal.SIGKILL)  # no release, no cleanup: a crashed pod
        assert await process.wait() == -signal.SIGKILL
    survivor = Once("migrate", client=make_client(holder="survivor"))
    status = await survivor.status()
    assert (status.phase, status.runner) == ("Running", "doomed")

    async def migrate() -> str:
        return "migrated by survivor"

    # Nobody reaps (no operator): the survivor, of the same user, judges the runner's
    # session dead on its own clock (renewCount unchanged for its ttl) and takes over.
    with anyio.fail_after(60):
        assert await survivor.run(migrate) == "migrated by survivor"
    status = await survivor.status()
    assert (status.phase, status.attempts, status.completed_by) == ("Done", 2, "survivor")
    client = make_client(holder="check")
    await client.connect()
    obj = await client.store.get(ONCE, client.namespace, "migrate")
    assert obj.status["holders"] == {}


async def test_the_training_example_runs_three_ranks_through_three_stages(
    kubeconfig: Path, namespace: str, make_client: MakeClient
) -> None:
    example = EXAMPLES / "training_barrier.py"
    argv = [sys.executable, str(example), "--world-size", "3"]
    argv += ["--kubeconfig", str(kubeconfig), "--namespace", namespace, "--timeout", "60"]
    with anyio.fail_after(120):
        result = await anyio.run_process(argv, env=child_env(), check=False)
    output = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "all 3 ranks passed load -> train -> export" in output
    for rank in range(3):  # three processes share the pipe: look for each, not for lines
        assert f"rank {rank}/3: w=" in output, output
    for stage in ("load", "train", "export"):
        status = await Barrier(
            f"train-job-{stage}", expected=None, client=make_client("k")
        ).status()
        assert (status.phase, status.arrived) == ("Open", 3)
        assert set(status.parties) == {"rank-0", "rank-1", "rank-2"}

"""koncli against a server it cannot reach, or as a user who may not list/watch: a one-line
error and exit 1 (docs/cli.md), never a hang, a traceback or an aiohttp repr.

The deadlines only turn a hang (the bug) into a failure; nothing is timed.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest
import yaml
from _cli_support import Result, koncli, koncli_env

from konductor_sdk.testing import ClusterHandle

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_env(kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    doc = yaml.safe_load(kubeconfig.read_text())
    for cluster in doc["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{closed_port()}"
    path = tmp_path / "dead-kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return koncli_env(path, tmp_path / "xdg", KONDUCTOR_NAMESPACE="x")


def one_clean_line(done: Result) -> str:
    assert done.stderr.startswith("koncli: "), done.stderr
    assert "Traceback" not in done.stderr
    assert "ConnectionKey" not in done.stderr
    return done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("mutex", "lock", "m", "--ttl", "30"),
        ("semaphore", "acquire", "s", "--ttl", "30"),
        ("lease", "acquire", "l", "--ttl", "30"),
        ("run", "-q", "--mutex", "m", "--", "true"),
        ("barrier", "wait", "b", "--expected", "2"),
        ("semaphore", "get", "s"),
        ("watch",),
    ],
)
async def test_an_unreachable_server_fails_within_the_retry_budget(
    dead_env: dict[str, str], args: tuple[str, ...]
) -> None:
    with anyio.fail_after(120):
        done = await koncli(dead_env, "--retry-budget", "5", *args)
    assert done.code == 1, done.stderr
    assert "cannot connect to the API server https://127.0.0.1:" in one_clean_line(done)


async def test_the_retry_budget_comes_from_the_environment_too(dead_env: dict[str, str]) -> None:
    with anyio.fail_after(120):
        done = await koncli(
            dead_env | {"KONDUCTOR_RETRY_BUDGET": "5"}, "mutex", "lock", "m", "--ttl", "9"
        )
    assert done.code == 1
    assert "retry budget 5s" in one_clean_line(done)


@pytest.mark.parametrize(
    "args",
    [
        ("mutex", "lock", "m", "--ttl", "30"),
        ("semaphore", "acquire", "s", "--ttl", "30"),
        ("lease", "acquire", "l", "--ttl", "30"),
        ("run", "-q", "--mutex", "m", "--", "true"),
        ("waitgroup", "wait", "wg"),
        ("watch",),
    ],
)
async def test_a_user_who_may_not_list_gets_forbidden_exit_1(
    control_plane: ClusterHandle, namespace: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    nobody = control_plane.mint_kubeconfig("nobody", [], namespace)
    env = koncli_env(nobody, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)
    with anyio.fail_after(120):
        done = await koncli(env, *args)
    assert done.code == 1, done.stderr
    assert "forbidden" in one_clean_line(done).lower()


async def test_waitgroup_add_takes_a_negative_delta(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    env = koncli_env(kubeconfig, tmp_path / "xdg", KONDUCTOR_NAMESPACE=namespace)
    assert (await koncli(env, "waitgroup", "add", "wg", "5")).stdout == "5\n"
    down = await koncli(env, "waitgroup", "add", "wg", "-3")
    assert (down.code, down.stdout) == (0, "2\n"), down.stderr
    too_far = await koncli(env, "waitgroup", "add", "wg", "-3")
    assert too_far.code == 2
    assert too_far.stderr.startswith("koncli: ")
    assert (await koncli(env, "waitgroup", "add", "wg", "--", "-2")).stdout == "0\n"

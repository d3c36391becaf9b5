"""Every ``examples/*.py`` runs as a script against the test control plane, bounded in time,
and the koncli commands of the ``examples/k8s`` manifests that tests/e2e/test_cli_examples.py
does not run (the Job and the CronJob) run here as their pods would run them.

Each example runs in the environment a document gets (``_runner.DocEnvironment``: a fresh
namespace as the kubeconfig's, ``KONDUCTOR_NAMESPACE``) with the arguments its docstring
shows, and must exit 0 and print what it promises.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _runner import DocEnvironment, run_command

from konductor_sdk.testing import ClusterHandle

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Example:
    args: str  # {kubeconfig} and {namespace} are filled in
    prints: tuple[str, ...]  # regular expressions its output must match
    seconds: float = 90


# Every examples/*.py: how it runs here, or the test that runs it.
EXAMPLES: dict[str, Example | str] = {
    "demo.py": "tests/e2e/test_demo.py",  # starts its own control plane, like `make demo`
    "semaphore_jobs.py": Example(
        "--kubeconfig {kubeconfig} --namespace {namespace} --workers 3 --jobs 2",
        (r"done: exit codes \[0, 0, 0\], at most [1-3] of 3 GPUs were ever in use",),
    ),
    "training_barrier.py": Example(
        "--world-size 2 --kubeconfig {kubeconfig} --namespace {namespace} --timeout 60",
        (r"rank 0/2: w=", r"rank 1/2: w=", r"all 2 ranks passed load -> train -> export"),
    ),
    "leader_service.py": Example(
        "--name report-scheduler --lease-duration 3 --interval 0.5 --run-for 3",
        (r"became leader \(fencing token 1\)", r"tick 2: working", r"stopped working"),
    ),
}


def _environment(control_plane: ClusterHandle, directory: Path, stem: str) -> DocEnvironment:
    name = control_plane.create_namespace(f"example-{stem}-{secrets.token_hex(3)}")
    return DocEnvironment.create(directory, control_plane.kubeconfig_path, name)


def test_every_example_is_run() -> None:
    found = {p.name for p in (REPO / "examples").glob("*.py")}
    assert found == set(EXAMPLES)
    for name, how in EXAMPLES.items():
        if isinstance(how, str):
            assert (REPO / how).is_file(), how
            assert name in (REPO / how).read_text(), f"{how} does not run examples/{name}"


@pytest.mark.parametrize("name", [n for n, how in EXAMPLES.items() if isinstance(how, Example)])
def test_example_runs(name: str, control_plane: ClusterHandle, tmp_path: Path) -> None:
    example = EXAMPLES[name]
    assert isinstance(example, Example)
    environment = _environment(control_plane, tmp_path, Path(name).stem.replace("_", "-"))
    args = example.args.format(kubeconfig=environment.kubeconfig, namespace=environment.namespace)
    command = f"python examples/{name} {args}"
    status, output = run_command(command, environment, example.seconds)
    assert status == 0, f"$ {command}\nexit {status}:\n{output}"
    for pattern in example.prints:
        assert re.search(pattern, output), f"$ {command}\nno {pattern!r} in:\n{output}"
    assert "Traceback" not in output, output
    assert "Unclosed" not in output, output


def _manifest(name: str) -> dict[str, Any]:
    (document,) = [d for d in yaml.safe_load_all((REPO / "examples/k8s" / name).read_text()) if d]
    return dict(document)


def _pod_environment(environment: DocEnvironment, pod: str) -> DocEnvironment:
    """What the downward API gives the example's pods (no kubelet runs them here)."""
    pod_env = {
        "POD_NAME": pod,
        "POD_NAMESPACE": environment.namespace,
        "POD_UID": secrets.token_hex(8),
    }
    return dataclasses.replace(environment, env=environment.env | pod_env)


def test_job_barrier_pods_start_together(control_plane: ClusterHandle, tmp_path: Path) -> None:
    """examples/k8s/job-barrier.yaml: its 4 indexed pods' command, run 4 times at once."""
    job = _manifest("job-barrier.yaml")
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    environment = _environment(control_plane, tmp_path, "job-barrier")
    command = shlex.join(["koncli", *container["args"]])
    pods = []
    for index in range(spec["parallelism"]):
        pod = _pod_environment(environment, f"{job['metadata']['name']}-{index}-x7k2p")
        pod.env["JOB_COMPLETION_INDEX"] = str(index)
        pods.append(
            subprocess.Popen(
                ["bash", "-c", command],
                env=pod.env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=60)[0] for proc in pods]
    assert [proc.returncode for proc in pods] == [0] * len(pods), outputs
    for index, output in enumerate(outputs):
        assert f"worker {index} starts" in output, output


def test_cronjob_mutex_run(control_plane: ClusterHandle, tmp_path: Path) -> None:
    """examples/k8s/cronjob-mutex.yaml: its pod's command holds the mutex while it runs."""
    cronjob = _manifest("cronjob-mutex.yaml")
    pod_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    environment = _pod_environment(
        _environment(control_plane, tmp_path, "cronjob-mutex"), "nightly-report-29000000-x7k2p"
    )
    command = shlex.join(["koncli", *container["args"]])
    status, output = run_command(command, environment, 60)
    assert status == 0, output
    assert "building the report" in output

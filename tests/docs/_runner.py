"""Running one document: its environment, its notebook kernel, its commands, its operator.

Everything a document runs sees the same environment (:class:`DocEnvironment`): the admin
kubeconfig of the test control plane, copied with the document's fresh namespace as the
context's namespace (so ``Client()``, ``kubectl`` and ``koncli`` all default to it), and
``KONDUCTOR_NAMESPACE`` naming it too; a ``HOME`` of its own (``~/.kube/config`` is the same
kubeconfig); the real build cache (``XDG_CACHE_HOME``), so a ``LocalControlPlane`` a
document starts finds the binaries; the virtualenv's ``bin`` first on ``PATH``; and none of
the caller's ``KONDUCTOR_*``/``POD_*``/``KUBERNETES_*`` variables. The working directory is
the repository, as for a reader following the docs from a clone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from konductor_sdk.testing._process import free_port

REPO = Path(__file__).resolve().parents[2]
KERNEL = Path(__file__).with_name("_kernel.py")
_DROPPED = ("KONDUCTOR_", "POD_", "KUBERNETES_", "_KONCLI", "PYTEST_")
# Lines in a document's output that mean something leaked even though every block passed.
LEAKS = ("Unclosed", "Task exception was never retrieved", "was never awaited")


def _cache_root() -> str:
    return os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")


def clean_environment() -> dict[str, str]:
    """This process's environment without what configures Konductor, pods or pytest."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}


@dataclass
class DocEnvironment:
    directory: Path
    namespace: str
    kubeconfig: Path
    env: dict[str, str]

    @classmethod
    def create(
        cls, directory: Path, admin_kubeconfig: Path, namespace: str, tools: Path | None = None
    ) -> DocEnvironment:
        home = directory / "home"
        (home / ".kube").mkdir(parents=True)
        config = yaml.safe_load(admin_kubeconfig.read_text())
        current = config["current-context"]
        for context in config["contexts"]:
            if context["name"] == current:
                context["context"]["namespace"] = namespace
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        shutil.copy(kubeconfig, home / ".kube" / "config")
        base = clean_environment()
        path = [str(Path(sys.executable).parent)]
        if tools is not None:
            path.append(str(tools))
        env = base | {
            "HOME": str(home),
            "XDG_CACHE_HOME": _cache_root(),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "KUBECONFIG": str(kubeconfig),
            "KONDUCTOR_NAMESPACE": namespace,
            "DOCTEST_DIR": str(directory),
            "PATH": os.pathsep.join([*path, base.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        return cls(directory, namespace, kubeconfig, env)


@dataclass
class Outcome:
    ok: bool
    error: str
    output: str
    timed_out: bool = False


class Kernel:
    """One ``_kernel.py`` process: Python blocks run in it in order, sharing globals."""

    def __init__(self, environment: DocEnvironment) -> None:
        self.log_path = environment.directory / "kernel.log"
        self._log = self.log_path.open("wb")
        read, write = os.pipe()
        self._replies = os.fdopen(read, "rb", buffering=0)
        self._buffer = b""
        self.proc = subprocess.Popen(
            [sys.executable, str(KERNEL), str(write)],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment.env,
            cwd=REPO,
            pass_fds=(write,),
        )
        os.close(write)

    def log_text(self, start: int = 0) -> str:
        return self.log_path.read_bytes()[start:].decode(errors="replace")

    def _reply(self, deadline: float) -> dict[str, object] | None:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._replies], [], [], remaining)
            if ready:
                chunk = os.read(self._replies.fileno(), 65536)
                if not chunk:
                    raise EOFError("the kernel exited")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, object] = json.loads(line)
        return answer

    def run(self, code: str, filename: str, line: int, timeout: float) -> Outcome:
        start = self.log_path.stat().st_size
        assert self.proc.stdin is not None
        request = {"code": code, "filename": filename, "line": line}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            answer = self._reply(time.monotonic() + timeout)
            timed_out = answer is None
            if answer is None:  # interrupt it: the traceback shows where it hung
                self.proc.send_signal(signal.SIGINT)
                answer = self._reply(time.monotonic() + 10) or {
                    "ok": False,
                    "error": "(no answer to SIGINT either)",
                }
        except (EOFError, BrokenPipeError):
            self.proc.wait(timeout=10)
            answer = {"ok": False, "error": f"the kernel exited ({self.proc.returncode})"}
            timed_out = False
        error = str(answer.get("error", ""))
        if timed_out:
            error = f"timed out after {timeout:g} s\n{error}"
        return Outcome(bool(answer["ok"]) and not timed_out, error, self.log_text(start), timed_out)

    def close(self, timeout: float = 30) -> tuple[int | None, str]:
        """End the kernel (EOF on its stdin); its exit status and whole log."""
        with contextlib.suppress(BrokenPipeError, OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            code: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._log.close()
        self._replies.close()
        return code, self.log_text()


def run_command(
    command: str,
    environment: DocEnvironment,
    timeout: float,
    until: str | None = None,
    documented: str | None = None,
) -> tuple[int | None, str]:
    """Run ``command`` with bash in the document's environment; (exit status, output).

    ``documented`` (for a stand-in) is in its environment as ``DOCTEST_COMMAND``.
    With ``until``, the command is a long-running one: once its output shows that text it
    gets SIGINT (Ctrl-C, to its whole process group, as a terminal sends it). The status
    is None if the time bound ran out first (the process group is then killed).
    """
    if re.search(r"\|\s*grep\s+(-\w*q|--quiet)", command):
        # Under pipefail, grep -q leaving early makes the writer die of SIGPIPE (exit 141)
        # whenever it had more to write: a block that passes or fails by timing.
        return 2, f"{command!r}: use 'grep PATTERN >/dev/null' after a pipe, not grep -q"
    proc = subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment.env | ({"DOCTEST_COMMAND": documented} if documented else {}),
        cwd=REPO,
        start_new_session=True,
    )
    assert proc.stdout is not None
    chunks: list[bytes] = []
    seen = False
    stop = threading.Event()  # the text was seen, or the output ended

    def pump() -> None:
        nonlocal seen
        assert proc.stdout is not None
        for line in proc.stdout:
            chunks.append(line)
            if until is not None and until.encode() in b"".join(chunks):
                seen = True
                stop.set()
        stop.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    status: int | None = None
    if until is not None and stop.wait(timeout) and seen:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    try:
        status = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = None
    reader.join(timeout=10)
    proc.stdout.close()
    return status, b"".join(chunks).decode(errors="replace")


class Operator:
    """``python -m konductor_operator`` for one namespace, as tests/e2e starts it."""

    def __init__(self, environment: DocEnvironment, extra: list[str]) -> None:
        self.port = free_port()
        self.log_path = environment.directory / "operator.log"
        args = [
            sys.executable,
            "-m",
            "konductor_operator",
            "--kubeconfig",
            str(environment.kubeconfig),
            "--namespace",
            environment.namespace,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
            "--no-leader-elect",
            "--log-format",
            "text",
            *extra,
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=environment.env, cwd=REPO
            )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = 30) -> None:
        """Poll /readyz (another process: there is nothing to wait on but its endpoint)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited:\n{self.log_tail()}")
            try:
                url = f"http://127.0.0.1:{self.port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"the operator was not ready within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def operator(environment: DocEnvironment, extra: list[str]) -> Iterator[Operator]:
    process = Operator(environment, extra)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()

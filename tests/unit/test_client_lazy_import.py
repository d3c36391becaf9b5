"""``defer_kubernetes_models``: the operator's process imports kubernetes_asyncio without its
generated API and model modules, and code that asks for them still gets them.

Each case runs in a fresh interpreter: this one imported kubernetes_asyncio long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from konductor_operator.__main__ import entry_point

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-used}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: from-context}}]
current-context: x
"""

# Printed at the end: every name of the packages, and whether it is their submodule.
SURFACE = """
import json, sys

def surface():
    out = {}
    for name in ("kubernetes_asyncio", "kubernetes_asyncio.client",
                 "kubernetes_asyncio.client.models"):
        pkg = sys.modules[name]
        names = {}
        for attr in dir(pkg):
            sub = sys.modules.get(f"{name}.{attr}")
            names[attr] = sub is not None and getattr(pkg, attr) is sub
        out[name] = names
    return out

print(json.dumps(surface()))
"""


def run(code: str, epilogue: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + epilogue],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_connected_client_has_loaded_no_generated_module(tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    out = run(
        f"""
        import sys, anyio
        from konductor_sdk import Client, Identity
        from konductor_sdk._kernel.client import defer_kubernetes_models

        assert defer_kubernetes_models()

        async def main():
            async with Client(kubeconfig={str(tmp_path / "kubeconfig")!r},
                              identity=Identity("t")) as client:
                from kubernetes_asyncio.client.api_client import ApiClient
                assert type(client._api_client) is ApiClient
                print(client.namespace)

        anyio.run(main)
        generated = [m for m in sys.modules
                     if m.startswith(("kubernetes_asyncio.client.models.",
                                      "kubernetes_asyncio.client.api."))]
        print(len(generated))
        """
    )
    assert out.split() == ["from-context", "0"]


def test_what_a_plain_import_gives_is_there_when_asked_for() -> None:
    plain = run("import kubernetes_asyncio.client\n", SURFACE)
    deferred = run(
        """
        import sys
        from konductor_sdk._kernel.client import defer_kubernetes_models

        assert defer_kubernetes_models()
        early = sys.modules["kubernetes_asyncio.client"].ApiClient
        from kubernetes_asyncio.client import ApiClient, CoreV1Api, V1Pod
        import kubernetes_asyncio
        from kubernetes_asyncio.client import models
        assert ApiClient is early, "the class bound early is the one the package binds"
        assert models.V1Pod is V1Pod
        assert kubernetes_asyncio.__version__
        assert kubernetes_asyncio.watch.Watch
        assert V1Pod(api_version="v1").to_dict()["api_version"] == "v1"
        """,
        SURFACE,
    )
    assert json.loads(deferred) == json.loads(plain)


def test_a_star_import_gets_every_name() -> None:
    out = run(
        """
        from konductor_sdk._kernel.client import defer_kubernetes_models

        assert defer_kubernetes_models()
        from kubernetes_asyncio.client import *
        print(CoreV1Api.__name__, V1Pod.__name__)
        """
    )
    assert out.split() == ["CoreV1Api", "V1Pod"]


def test_nothing_is_done_once_kubernetes_asyncio_is_imported() -> None:
    out = run(
        """
        import kubernetes_asyncio.client, sys
        from konductor_sdk._kernel.client import defer_kubernetes_models

        before = dict(sys.modules)
        print(defer_kubernetes_models(), sys.modules == before)
        """
    )
    assert out.split() == ["False", "True"]


def test_an_unexpected_layout_leaves_a_plain_import() -> None:
    out = run(
        """
        import sys
        from konductor_sdk._kernel.client import defer_kubernetes_models

        sys.modules["kubernetes_asyncio.client.api_client"] = None  # cannot be imported
        print(defer_kubernetes_models())
        print(sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio")))
        from kubernetes_asyncio.client import ApiClient, CoreV1Api
        print(ApiClient.__module__)
        """
    )
    assert out.split() == ["False", "[]", "kubernetes_asyncio.client.api_client"]


def test_the_operator_executable_defers_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        "konductor_operator.__main__.defer_kubernetes_models", lambda: calls.append("defer")
    )
    monkeypatch.setattr("konductor_operator.__main__.main", lambda: calls.append("main"))
    entry_point()
    assert calls == ["defer", "main"]


def test_the_operator_command_itself_does_not_defer(tmp_path: Path) -> None:
    # Tests (and anyone embedding it) call main() in a process that is not the operator's.
    out = run(
        f"""
        import sys
        from click.testing import CliRunner
        from konductor_operator.__main__ import main

        result = CliRunner().invoke(
            main, ["--kubeconfig", {str(tmp_path / "missing")!r}, "--metrics-port", "0"]
        )
        assert result.exit_code == 1, result.output  # once it tried to load the kubeconfig
        print("kubernetes_asyncio.client.models.v1_pod" in sys.modules)
        """
    )
    assert out.split() == ["True"]

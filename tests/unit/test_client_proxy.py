"""The client takes the proxy from the environment once, when it connects (aiohttp would
look it up, and the netrc file, in worker threads on every request)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from konductor_sdk import Client, Identity

pytestmark = pytest.mark.anyio

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://k8s.example:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u, namespace: ns}
current-context: x
"""

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


async def connected(kubeconfig: Path) -> tuple[object, object]:
    client = Client(kubeconfig=kubeconfig, identity=Identity("proxy-test"))
    await client.connect()
    try:
        rest = client._api_client.rest_client
        assert rest.pool_manager.trust_env is False  # nothing looked up per request
        return rest.proxy, rest.proxy_headers
    finally:
        await client.aclose()


async def test_the_environments_proxy_is_used_with_its_credentials(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://someone:secret@proxy.example:3128")
    proxy, headers = await connected(kubeconfig)
    assert proxy == "http://proxy.example:3128"
    assert isinstance(headers, dict)
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"someone:secret").decode()


async def test_no_proxy_and_no_variables_mean_a_direct_connection(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await connected(kubeconfig) == (None, None)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "k8s.example")
    assert await connected(kubeconfig) == (None, None)

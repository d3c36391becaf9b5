"""The helm build target: cached, locked and stamped like kube-apiserver, overridable with
``TEST_ASSET_HELM``. A fake ``go`` on PATH stands in for the real toolchain."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from konductor_sdk.testing import _binaries
from konductor_sdk.testing.__main__ import main
from konductor_sdk.testing._binaries import BinariesError, cache_root, ensure_helm

FAKE_GO = """#!/bin/sh
out=""
prev=""
for arg in "$@"; do
    if [ "$prev" = "-o" ]; then out="$arg"; fi
    prev="$arg"
done
{ echo "#!/bin/sh"; echo "# cwd=$(pwd) CGO_ENABLED=$CGO_ENABLED"; echo "# args=$*"; } > "$out"
chmod +x "$out"
"""


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("TEST_ASSET_HELM", "TEST_ASSET_KUBE_APISERVER", "TEST_ASSET_ETCD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    go = tmp_path / "fakebin" / "go"
    go.parent.mkdir()
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(go.parent), "/usr/bin", "/bin"]))
    return tmp_path


def test_helm_is_built_once_into_its_own_versioned_cache_dir() -> None:
    version = _binaries._HELM.version()
    assert re.fullmatch(r"v3\.\d+\.\d+", version)
    helm = ensure_helm()
    assert helm.parent.parent == cache_root()
    assert helm.parent.name.startswith(f"helm-{version}-")
    recorded = helm.read_text()
    assert "cwd=" + str(Path(_binaries.__file__).parent / "gomod" / "helm") in recorded
    assert "CGO_ENABLED=0" in recorded
    # Stamped as helm's own Makefile does: `helm version` and the default KubeVersion.
    assert f"-X helm.sh/helm/v3/internal/version.version={version}" in recorded
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" in recorded
    assert recorded.rstrip().endswith("helm.sh/helm/v3/cmd/helm")
    mtime = helm.stat().st_mtime_ns
    assert ensure_helm() == helm
    assert helm.stat().st_mtime_ns == mtime  # the second call built nothing


def test_concurrent_callers_build_helm_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_build = _binaries._build
    entered = threading.Barrier(2, timeout=10)

    def counting_build(binary: _binaries._GoBinary, target: Path) -> None:
        calls.append(binary.name)
        real_build(binary, target)

    def call() -> None:
        entered.wait()  # both callers start together; the lock must serialise them
        results.append(ensure_helm())

    monkeypatch.setattr(_binaries, "_build", counting_build)
    results: list[Path] = []
    threads = [threading.Thread(target=call) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["helm"]
    assert results[0] == results[1]


def test_test_asset_helm_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine" / "helm"
    mine.parent.mkdir()
    mine.write_text("#!/bin/sh\n")
    mine.chmod(0o755)
    monkeypatch.setenv("TEST_ASSET_HELM", str(mine))
    assert ensure_helm() == mine.resolve()
    assert not cache_root().exists()
    monkeypatch.setenv("TEST_ASSET_HELM", str(tmp_path / "missing"))
    with pytest.raises(BinariesError, match=r"from \$TEST_ASSET_HELM"):
        ensure_helm()


def test_build_command_builds_helm_only_when_asked() -> None:
    plain = CliRunner().invoke(main, ["build"])
    assert plain.exit_code == 0, plain.output
    assert "helm:" not in plain.output
    assert not list(cache_root().glob("helm-*"))
    with_helm = CliRunner().invoke(main, ["build", "--helm"])
    assert with_helm.exit_code == 0, with_helm.output
    assert "helm:" in with_helm.output
    assert list(cache_root().glob("helm-*/helm"))

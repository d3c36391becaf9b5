"""Binary lookup honours envtest's variables, builds once into a versioned cache, and
explains itself when it cannot. A fake ``go`` on PATH stands in for the real toolchain."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from konductor_sdk.testing import _binaries
from konductor_sdk.testing._binaries import BinariesError, cache_root, ensure_binaries

FAKE_GO = """#!/bin/sh
# Records its arguments and environment in the "binary" it pretends to build.
out=""
prev=""
for arg in "$@"; do
    if [ "$prev" = "-o" ]; then out="$arg"; fi
    prev="$arg"
done
if [ -n "$FAKE_GO_FAIL" ]; then echo "main.go:1: undefined: everything" >&2; exit 2; fi
{ echo "#!/bin/sh"; echo "# cwd=$(pwd) CGO_ENABLED=$CGO_ENABLED"; echo "# args=$*"; } > "$out"
chmod +x "$out"
"""


def _executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("TEST_ASSET_KUBE_APISERVER", "TEST_ASSET_ETCD", "KUBEBUILDER_ASSETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bin_dir = tmp_path / "fakebin"
    _executable(bin_dir / "go", FAKE_GO)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]))
    return tmp_path


def test_per_binary_variables_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apiserver = _executable(tmp_path / "a" / "kube-apiserver")
    etcd = _executable(tmp_path / "b" / "etcd")
    monkeypatch.setenv("TEST_ASSET_KUBE_APISERVER", str(apiserver))
    monkeypatch.setenv("TEST_ASSET_ETCD", str(etcd))
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "nowhere"))
    assert ensure_binaries() == _binaries.Binaries(kube_apiserver=apiserver, etcd=etcd)
    assert not cache_root().exists()  # nothing was built


def test_kubebuilder_assets_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assets = tmp_path / "assets"
    _executable(assets / "kube-apiserver")
    _executable(assets / "etcd")
    own_etcd = _executable(tmp_path / "etcd-3.7")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    monkeypatch.setenv("TEST_ASSET_ETCD", str(own_etcd))
    found = ensure_binaries()
    assert found.kube_apiserver == assets / "kube-apiserver"
    assert found.etcd == own_etcd


def test_override_to_a_missing_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ASSET_ETCD", str(tmp_path / "missing"))
    with pytest.raises(BinariesError, match=r"missing \(from \$TEST_ASSET_ETCD\) is not an"):
        ensure_binaries()


def test_builds_into_a_versioned_cache_once(capsys: pytest.CaptureFixture[str]) -> None:
    first = ensure_binaries()
    directory = first.kube_apiserver.parent
    assert directory.parent == cache_root()
    assert directory.name.startswith("v1.36.3-v3.6.8-")
    recorded = first.kube_apiserver.read_text()
    assert "CGO_ENABLED=0" in recorded
    assert "cwd=" + str(Path(_binaries.__file__).parent / "gomod" / "kube-apiserver") in recorded
    assert "-trimpath -ldflags -s -w -X k8s.io/component-base/version.gitVersion=v1.36.3" in (
        recorded
    )
    assert recorded.rstrip().endswith("k8s.io/kubernetes/cmd/kube-apiserver")
    assert first.etcd.read_text().rstrip().endswith("go.etcd.io/etcd/server/v3")
    assert "building etcd v3.6.8 (first run only" in capsys.readouterr().err

    second = ensure_binaries()
    assert second == first
    assert "building" not in capsys.readouterr().err
    assert sorted(p.name for p in directory.iterdir()) == [".lock", "etcd", "kube-apiserver"]


def test_missing_go_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BinariesError, match=r"`go` is not on PATH.*KUBEBUILDER_ASSETS"):
        ensure_binaries()


def test_failed_build_shows_compiler_output_and_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "1")
    with pytest.raises(BinariesError, match="undefined: everything"):
        ensure_binaries()
    # Neither a finished-looking binary nor a half-written temporary file remains.
    assert [p.name for p in cache_root().rglob("*") if p.is_file()] == [".lock"]


def test_concurrent_callers_build_each_binary_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_build = _binaries._build

    def slow_build(binary: _binaries._GoBinary, target: Path) -> None:
        calls.append(binary.name)
        time.sleep(0.2)  # widen the window in which a second caller could start a build
        real_build(binary, target)

    monkeypatch.setattr(_binaries, "_build", slow_build)
    results: list[_binaries.Binaries] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_binaries())) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls) == ["etcd", "kube-apiserver"]
    assert len(results) == 2
    assert results[0] == results[1]
    assert os.access(results[0].etcd, os.X_OK)

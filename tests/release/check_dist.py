"""Smoke-test the release artifacts in ``dist/`` the way a user installs them (``make dist-check``).

For the wheel and for the sdist separately: a fresh virtualenv in a temporary directory,
``pip install <artifact>`` (dependencies from the index, nothing from this checkout); and
a third one installed the way the image is (Dockerfile): ``requirements.lock`` with
``--require-hashes --only-binary=:all:``, then the wheel with ``--no-deps --no-index``.
Then, in each, from a working directory outside the checkout, ``PYTHONPATH`` cleared:

* ``koncli --help``, ``konductor-operator --help``, ``python -m konductor_sdk.testing --help``;
* the package imported is the installed one, its ``__version__`` is the distribution's
  version and the artifact's file name carries it;
* the CRDs and the Go wrapper modules are inside the installed package (the local control
  plane and the binary builds need them);
* the pytest plugin is registered under the ``pytest11`` entry point and loads: ``pytest
  --fixtures`` (pytest installed next to it) lists the plugin's fixtures.

Usage: ``python tests/release/check_dist.py dist`` (exit 0 when every check passed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "konductor-sdk"
# What a user's environment looks like: none of the checkout's variables.
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
}

PROBE = """
import importlib.metadata as md, json, pathlib, sys
import konductor_sdk, konductor_operator
pkg = pathlib.Path(konductor_sdk.__file__).parent
plugins = sorted(
    e.value for e in md.entry_points(group="pytest11") if e.dist.name == "konductor-sdk"
)
print(json.dumps({
    "version": konductor_sdk.__version__,
    "dist_version": md.version("konductor-sdk"),
    "sdk": str(pkg),
    "operator": str(pathlib.Path(konductor_operator.__file__).parent),
    "crds": sorted(p.name for p in (pkg / "crds").glob("*.yaml")),
    "policies": sorted(
        p.name
        for p in (pathlib.Path(konductor_operator.__file__).parent / "policies").glob("*.yaml")
    ),
    "gomod": sorted(str(p.relative_to(pkg)) for p in (pkg / "testing" / "gomod").glob("*/go.*")),
    "plugins": plugins,
    "prefix": sys.prefix,
}))
"""


def run(argv: list[str], cwd: Path) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(
            f"FAILED ({result.returncode}): {' '.join(argv)}\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def check(artifact: Path, work: Path, *, locked: bool = False) -> None:
    import json

    print(f"== {artifact.name}{' (as in the image: hashed lock, then --no-deps)' * locked}")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    python = str(bin_dir / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    if locked:
        lock = ROOT / "requirements.lock"
        run([*pip, "install", "--require-hashes", "--only-binary=:all:", "-r", str(lock)], work)
        run([*pip, "install", "--no-deps", "--no-index", str(artifact)], cwd=work)
        run([*pip, "check"], cwd=work)  # the lock satisfies everything the wheel requires
        run([*pip, "install", "pytest"], cwd=work)
    else:
        run([*pip, "install", str(artifact), "pytest"], cwd=work)
    outside = work / "elsewhere"
    outside.mkdir()

    for argv, expect in (
        ([str(bin_dir / "koncli"), "--help"], "semaphore"),
        ([str(bin_dir / "konductor-operator"), "--help"], "--metrics-host"),
        ([python, "-m", "konductor_sdk.testing", "--help"], "build"),
    ):
        out = run(argv, cwd=outside)
        assert expect in out, f"{argv}: {expect!r} not in output:\n{out}"
        print(f"ok: {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))}")

    facts = json.loads(run([python, "-c", PROBE], cwd=outside))
    assert facts["policies"], "konductor_operator/policies/*.yaml missing"
    prefix = Path(facts["prefix"]).resolve()
    for key in ("sdk", "operator"):
        where = Path(facts[key]).resolve()
        assert prefix in where.parents, f"{key} imported from {where}, not from {prefix}"
        assert ROOT not in where.parents, f"{key} imported from the checkout: {where}"
    assert facts["version"] == facts["dist_version"], facts
    assert f"-{facts['version']}" in artifact.name.replace("_", "-"), (artifact, facts)
    expected_crds = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert facts["crds"] == expected_crds, (facts["crds"], expected_crds)
    gomods = {str(Path(p).parent.name) for p in facts["gomod"]}
    assert {"kube-apiserver", "etcd", "helm"} <= gomods, facts["gomod"]
    assert facts["plugins"] == ["konductor_sdk.testing.pytest_plugin"], facts["plugins"]
    print(f"ok: konductor-sdk {facts['version']} imported from the venv, CRDs and go modules in")

    fixtures = run([str(bin_dir / "pytest"), "--fixtures", "-p", "no:cacheprovider"], cwd=outside)
    for fixture in ("control_plane", "kubeconfig", "api_client", "namespace"):
        assert fixture in fixtures, f"pytest plugin fixture {fixture} missing"
    print("ok: pytest plugin loads (fixtures control_plane, kubeconfig, api_client, namespace)")


def main(argv: list[str]) -> int:
    dist = Path(argv[1] if len(argv) > 1 else "dist").resolve()
    wheels = sorted(dist.glob("konductor_sdk-*.whl"))
    sdists = sorted(dist.glob("konductor_sdk-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(
            f"expected one wheel and one sdist of {DISTRIBUTION} in {dist}, found "
            f"{[p.name for p in dist.iterdir()] if dist.is_dir() else 'no directory'}"
        )
        return 1
    for artifact, locked in ((wheels[0], False), (sdists[0], False), (wheels[0], True)):
        with tempfile.TemporaryDirectory(prefix="konductor-dist-") as tmp:
            check(artifact, Path(tmp), locked=locked)
    print("dist-check: wheel and sdist install and work outside the checkout, and so does")
    print("dist-check: the wheel on requirements.lock installed with --require-hashes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

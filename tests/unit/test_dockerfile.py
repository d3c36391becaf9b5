"""The operator image's Dockerfile, checked statically.

No Docker engine runs where the tests run, and no daemonless builder can pull the base
image here (the only network is package registries), so the Dockerfile is parsed: base
images pinned by digest (no ``latest``, no bare tags), every Python package installed from
a hashed lock with ``--require-hashes`` (the build tools too), nothing resolved at build
time, reproducibility settings, a non-root user. ``make dist-check`` runs the same install
steps (lock with --require-hashes, then the wheel with --no-deps) in a fresh virtualenv.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"^[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """``{package: (version, hashes)}`` of a pip-compile lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (ROOT / name).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            current = canonicalize_name(match.group(1))
            entries[current] = (match.group(2), [])
        elif current and (hashed := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            entries[current][1].append(hashed.group(1))
    return entries


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/k8s/Dockerfile"])
def test_base_images_are_pinned_by_digest(dockerfile: str) -> None:
    bases = [args.split()[0] for kw, args in instructions(ROOT / dockerfile) if kw == "FROM"]
    assert bases
    for base in bases:
        assert DIGEST.match(base), f"{dockerfile}: FROM {base} is not pinned by digest"
        assert ":latest@" not in base
    assert len(set(bases)) == 1  # build and runtime stages on the same base


def pip_installs(dockerfile: Path) -> list[list[str]]:
    commands = []
    for keyword, args in instructions(dockerfile):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if len(words) > 1 and words[0].endswith("pip") and words[1] in ("install", "wheel"):
                commands.append(words)
    return commands


def test_every_python_package_is_installed_from_a_hashed_lock() -> None:
    installs = pip_installs(ROOT / "Dockerfile")
    assert installs
    from_locks = []
    for words in installs:
        assert "--no-cache-dir" in words, words
        if "-r" in words:
            assert "--require-hashes" in words, words
            assert "--only-binary=:all:" in words, words  # no sdist built at image time
            from_locks.append(Path(words[words.index("-r") + 1]).name)
        else:
            # Only the project's own wheel, built in the image, without resolving anything.
            assert "--no-deps" in words, words
            assert "--no-index" in words or words[1] == "wheel", words
    assert sorted(from_locks) == ["requirements-build.lock", "requirements.lock"]


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-build.lock"])
def test_locks_pin_every_package_with_hashes(name: str) -> None:
    entries = lock(name)
    assert entries
    for package, (version, hashes) in entries.items():
        assert hashes, f"{name}: {package}=={version} has no hash"
    text = (ROOT / name).read_text()
    assert "--find-links" not in text
    assert "--index-url" not in text


def test_the_lock_satisfies_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entries = lock("requirements.lock")
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is a dependency but not in requirements.lock"
        assert requirement.specifier.contains(entries[name][0]), (spec, entries[name][0])
    assert "aiohttp" in {canonicalize_name(Requirement(s).name) for s in project["dependencies"]}
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    build_lock = lock("requirements-build.lock")
    for spec in build:
        requirement = Requirement(spec)
        assert requirement.specifier.contains(build_lock[canonicalize_name(requirement.name)][0])


def test_reproducible_and_non_root() -> None:
    steps = instructions(ROOT / "Dockerfile")
    text = "\n".join(f"{k} {a}" for k, a in steps)
    assert text.count("ARG SOURCE_DATE_EPOCH") == 2  # both stages
    assert "SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}" in text
    assert "PIP_NO_CACHE_DIR=1" in text
    assert "--invalidation-mode unchecked-hash" in text  # no timestamps in .pyc files
    assert "--no-compile" in text
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users == ["65532:65532"]
    assert steps[-1] == ("ENTRYPOINT", '["konductor-operator"]')
    assert not any(keyword == "ADD" for keyword, _ in steps)  # no remote fetches
    copied = {args.split()[0] for keyword, args in steps if keyword == "COPY"}
    assert {"crds", "policies", "konductor_sdk", "konductor_operator"} <= copied

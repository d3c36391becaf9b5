"""Installing konductor registers its pytest plugin, which then costs nothing unless used."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from konductor_sdk.testing import pytest_plugin

PLUGIN = "konductor_sdk.testing.pytest_plugin"


def test_entry_point_is_declared_and_resolves_to_the_plugin_module() -> None:
    (entry,) = [ep for ep in entry_points(group="pytest11") if ep.value == PLUGIN]
    # Named after the module, so `pytest_plugins = [PLUGIN]` finds it already registered.
    assert entry.name == PLUGIN
    assert entry.dist is not None
    assert entry.dist.name == "konductor-sdk"
    assert entry.load() is pytest_plugin


def test_plugin_is_registered_once(pytestconfig: pytest.Config) -> None:
    # tests/conftest.py also lists it in pytest_plugins; that must not register it again.
    manager = pytestconfig.pluginmanager
    assert manager.get_plugin(PLUGIN) is pytest_plugin
    assert [p for p in manager.get_plugins() if p is pytest_plugin] == [pytest_plugin]


def test_a_project_that_does_not_use_the_fixtures_starts_nothing(tmp_path: Path) -> None:
    # An `integration/` directory and xdist are what used to make the controller start a
    # control plane eagerly. Pointing the plugin at a cluster that does not exist makes any
    # attempt to start or reach one fail the run.
    tests = tmp_path / "tests" / "integration"
    tests.mkdir(parents=True)
    (tests / "test_plain.py").write_text(
        textwrap.dedent(
            """
            def test_plain():
                assert True
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env[pytest_plugin.EXISTING_CLUSTER_ENV] = str(tmp_path / "no-such-kubeconfig")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "1", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "no control plane" not in result.stdout + result.stderr

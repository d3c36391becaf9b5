"""Test-suite wiring: the local control plane plugin (fixtures, markers, xdist sharing).

Installing konductor registers the plugin (a ``pytest11`` entry point); it is listed here too
so the suite also runs with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``. The entry point is named
after the module, so pytest does not register it twice.

The plugin starts one kube-apiserver + etcd per session only when a selected test uses its
fixtures, so ``pytest tests/unit`` stays fast. Fixtures it provides: ``control_plane``,
``kubeconfig``, ``api_client``, ``namespace`` and ``anyio_backend`` (see docs/testing.md).
"""

pytest_plugins = ["konductor_sdk.testing.pytest_plugin"]

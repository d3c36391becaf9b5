"""Test-suite wiring: the local control plane plugin (fixtures, markers, xdist sharing).

The plugin starts one kube-apiserver + etcd per session only when integration or e2e tests
are selected, so ``pytest tests/unit`` stays fast. Fixtures it provides: ``control_plane``,
``kubeconfig``, ``api_client``, ``namespace`` and ``anyio_backend`` (see docs/testing.md).
"""

pytest_plugins = ["konductor_sdk.testing.pytest_plugin"]

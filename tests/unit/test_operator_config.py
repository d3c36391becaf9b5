"""Flags, environment, validation, structured logs, probes and the plug-in contract."""

from __future__ import annotations

import io
import json
import logging
import types
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

import konductor_operator
from konductor_operator import Health, Metrics, OperatorConfig
from konductor_operator.__main__ import main
from konductor_operator._http import serve
from konductor_operator._logging import JsonFormatter, configure_logging
from konductor_operator._operator import default_controllers
from konductor_sdk import ConfigurationError


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"namespaces": ["Bad_NS"]}, "namespace"),
        ({"namespaces": ["x" * 64]}, "namespace"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"metrics_port": -1}, "metrics_port"),
        ({"lease_name": "UPPER"}, "lease_name"),
        ({"lease_namespace": "a/b"}, "lease_namespace"),
        ({"retry_period": 0}, "retry_period"),
        ({"renew_deadline": 2.0, "retry_period": 2.0}, "renew_deadline"),
        ({"lease_duration": 10.0, "renew_deadline": 10.0}, "lease_duration"),
        ({"identity": "  "}, "identity"),
        ({"workers": 0}, "workers"),
        ({"workers": 1000}, "workers"),
        ({"resync_seconds": 0.5}, "resync_seconds"),
        ({"event_rate": 0}, "event_rate"),
        ({"event_burst": 0}, "event_burst"),
        ({"log_level": "chatty"}, "log_level"),
        ({"log_format": "xml"}, "log_format"),
        ({"http_probe_allow": ["x.local"]}, "http_probe_allow"),
        ({"metrics_auth": "basic"}, "metrics_auth"),
        ({"metrics_tls_cert": "tls.crt"}, "metrics_tls_key"),
        ({"cel_workers": 0}, "cel_workers"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        OperatorConfig(**kwargs)


def test_defaults_and_conversions() -> None:
    config = OperatorConfig(namespaces=[], log_level="debug", http_probe_allow=["http://a/"])
    assert config.namespaces is None, "no namespaces means all"
    assert config.log_level == "DEBUG"
    assert config.http_probe_allow == ("http://a/",)
    assert (config.metrics_host, config.metrics_auth) == ("127.0.0.1", "none")
    assert config.lease_duration > config.renew_deadline > 1.2 * config.retry_period


def test_cli_flags_and_environment_build_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[OperatorConfig] = []

    async def fake_run(config: OperatorConfig) -> None:
        seen.append(config)

    monkeypatch.setattr("konductor_operator.__main__._run", fake_run)
    monkeypatch.setattr("konductor_operator.__main__.configure_logging", lambda *a: None)
    result = CliRunner().invoke(
        main,
        [
            "--namespace",
            "a",
            "--namespace",
            "b",
            "--metrics-port",
            "0",
            "--lease-duration",
            "4",
            "--renew-deadline",
            "3",
            "--retry-period",
            "0.5",
            "--log-format",
            "text",
            "--enable-http-probes",
            "--http-probe-allow",
            "http://svc.local:8080/health",
        ],
        env={"KONDUCTOR_OPERATOR_LEASE_NAME": "from-env", "KONDUCTOR_OPERATOR_WORKERS": "7"},
    )
    assert result.exit_code == 0, result.output
    [config] = seen
    assert config.namespaces == ("a", "b")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (4, 3, 0.5)
    assert config.lease_name == "from-env"
    assert config.workers == 7
    assert config.enable_http_probes
    assert config.http_probe_allow == ("http://svc.local:8080/health",)
    assert config.log_format == "text"
    assert config.metrics_port == 0


def test_cli_rejects_bad_values_before_doing_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("konductor_operator.__main__._run", pytest.fail)
    result = CliRunner().invoke(main, ["--lease-duration", "1", "--renew-deadline", "3"])
    assert result.exit_code == 2
    assert "lease_duration must be > renew_deadline" in result.output


def test_json_logs_carry_extra_fields() -> None:
    record = logging.LogRecord("konductor_operator", logging.INFO, "f", 1, "wrote %s", ("x",), None)
    record.kind = "Semaphore"
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"] == "wrote x"
    assert out["kind"] == "Semaphore"
    assert out["level"] == "INFO"
    assert set(out) == {"ts", "level", "logger", "msg", "kind"}


def test_configure_logging_routes_operator_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging("INFO", "json", stream)
        logging.getLogger("konductor_operator.core").info("hello", extra={"object": "s"})
        logging.getLogger("konductor_operator.core").debug("hidden")
        [line] = stream.getvalue().splitlines()
        assert json.loads(line)["msg"] == "hello"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.anyio
async def test_probe_server_answers_metrics_health_and_readiness() -> None:
    import aiohttp

    metrics, health = Metrics(), Health()
    metrics.leader.set(1)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve(
                metrics, health, host="127.0.0.1", port=0, task_status=task_status
            )
        )
        assert port > 0
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503, "not connected yet"
            health.connected = True
            health.set_ready("core", False)
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                assert "core" in await resp.text()
            health.set_ready("core", True)
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                assert "konductor_operator_leader 1.0" in await resp.text()
        tg.cancel_scope.cancel()


def test_default_controllers_include_core_and_a_gate_controller_when_present() -> None:
    names = [name for name, _ in default_controllers()]
    assert names[0] == "core"
    try:
        import konductor_operator.gate_controller  # noqa: F401
    except ModuleNotFoundError:
        assert names == ["core"]
    else:
        assert names == ["core", "gate"]


def test_public_api_is_exactly_all() -> None:
    public = {
        n
        for n, v in vars(konductor_operator).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public == set(konductor_operator.__all__)
    assert konductor_operator.__all__ == sorted(konductor_operator.__all__)


def test_cli_reports_a_missing_kubeconfig_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr("konductor_operator.__main__.configure_logging", lambda *a: None)
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(main, ["--kubeconfig", str(missing), "--metrics-port", "0"])
    assert result.exit_code == 1
    assert f"kubeconfig: no such file '{missing}'" in result.output
    assert "Traceback" not in result.output

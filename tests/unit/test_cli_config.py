"""koncli settings: flags > environment > config file > built-in defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from konductor_sdk import ConfigurationError
from konductor_sdk.cli import _config
from konductor_sdk.cli._config import Flags, Settings

NAMES = st.from_regex(r"[a-z]([a-z0-9-]{0,9}[a-z0-9])?", fullmatch=True)  # namespace names
OUTPUTS = st.sampled_from(_config.OUTPUT_FORMATS)


@given(
    flag=st.none() | NAMES,
    env=st.none() | NAMES,
    config=st.none() | NAMES,
    flag_out=st.none() | OUTPUTS,
    env_out=st.none() | OUTPUTS,
    config_out=st.none() | OUTPUTS,
)
def test_highest_present_source_wins(
    flag: str | None,
    env: str | None,
    config: str | None,
    flag_out: str | None,
    env_out: str | None,
    config_out: str | None,
) -> None:
    environ = {}
    if env is not None:
        environ["KONDUCTOR_NAMESPACE"] = env
    if env_out is not None:
        environ["KONDUCTOR_OUTPUT"] = env_out
    file: dict[str, object] = {}
    if config is not None:
        file["namespace"] = config
    if config_out is not None:
        file["output"] = config_out

    settings = _config.resolve(Flags(namespace=flag, output=flag_out), environ, file)

    assert settings.namespace == next((v for v in (flag, env, config) if v is not None), None)
    assert settings.output == next(
        (v for v in (flag_out, env_out, config_out) if v is not None), "text"
    )
    expected_source = next(
        (s for s, v in (("flag", flag), ("env", env), ("config", config)) if v is not None),
        "default",
    )
    assert settings.sources["namespace"] == expected_source


def test_ttl_layers() -> None:
    assert Settings().ttl("semaphore") == 30
    assert Settings().ttl("lease") == 15

    from_file = _config.resolve(Flags(), {}, {"ttl": {"default": 40, "mutex": 7}})
    assert (from_file.ttl("semaphore"), from_file.ttl("mutex")) == (40, 7)
    assert from_file.ttl("lease") == 15  # built-in per-kind default survives a file default

    flat = _config.resolve(Flags(), {}, {"ttl": 12})
    assert (flat.ttl("semaphore"), flat.ttl("lease")) == (12, 12)

    env = _config.resolve(Flags(), {"KONDUCTOR_TTL": "9"}, {"ttl": {"mutex": 7}})
    assert (env.ttl("mutex"), env.ttl("lease"), env.sources["ttl"]) == (9, 9, "env")


def test_empty_environment_variable_counts_as_unset() -> None:
    settings = _config.resolve(Flags(), {"KONDUCTOR_NAMESPACE": ""}, {"namespace": "cfg"})
    assert settings.namespace == "cfg"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"namspace": "x"}, "unknown key 'namspace'"),
        ({"output": "xml"}, "output must be one of text, json, yaml, got 'xml'"),
        ({"namespace": 3}, "namespace must be a non-empty string"),
        ({"ttl": 0}, "ttl must be an integer number of seconds in [1, 86400], got 0"),
        ({"ttl": 86_401}, "in [1, 86400], got 86401"),
        ({"ttl": True}, "got True"),
        ({"ttl": {"semaphor": 3}}, "unknown key ttl.semaphor"),
        ({"ttl": {"lease": -1}}, "ttl.lease must be an integer"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        _config.validate_config(data, where="cfg.toml")
    assert fragment in str(info.value)
    assert str(info.value).startswith("cfg.toml: ")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"KONDUCTOR_OUTPUT": "table"}, "KONDUCTOR_OUTPUT must be one of"),
        ({"KONDUCTOR_TTL": "soon"}, "KONDUCTOR_TTL must be an integer"),
    ],
)
def test_bad_environment_is_rejected_naming_the_variable(
    env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        _config.resolve(Flags(), env, {})


def test_config_file_location(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _config.config_path(Flags(), {}, home) == (
        home / ".config" / "konductor" / "config.toml",
        False,
    )
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert _config.config_path(Flags(), xdg, home)[0] == tmp_path / "xdg/konductor/config.toml"
    env = {**xdg, "KONDUCTOR_CONFIG": str(tmp_path / "env.toml")}
    assert _config.config_path(Flags(), env, home) == (tmp_path / "env.toml", True)
    flags = Flags(config=str(tmp_path / "flag.toml"))
    assert _config.config_path(flags, env, home) == (tmp_path / "flag.toml", True)


def test_load_reads_the_file_and_layers_env_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('namespace = "from-file"\noutput = "yaml"\n[ttl]\nsemaphore = 11\n')
    env = {"KONDUCTOR_CONFIG": str(cfg), "KONDUCTOR_OUTPUT": "json"}

    settings = _config.load(Flags(namespace="from-flag"), env, tmp_path)

    assert settings.config_path == cfg
    assert (settings.namespace, settings.output, settings.ttl("semaphore")) == (
        "from-flag",
        "json",
        11,
    )
    assert (settings.sources["namespace"], settings.sources["output"]) == ("flag", "env")


def test_missing_default_file_is_fine_but_a_named_one_is_not(tmp_path: Path) -> None:
    assert _config.load(Flags(), {}, tmp_path).config_path is None
    with pytest.raises(ConfigurationError, match="does not exist"):
        _config.load(Flags(config=str(tmp_path / "nope.toml")), {}, tmp_path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("namespace = \n")
    with pytest.raises(ConfigurationError, match=r"bad\.toml' is not valid TOML"):
        _config.load(Flags(config=str(cfg)), {}, tmp_path)

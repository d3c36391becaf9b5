"""Settings: built-in defaults < config file < environment < flags.

The config file is TOML, at ``--config``, else ``$KONDUCTOR_CONFIG``, else
``$XDG_CONFIG_HOME/konductor/config.toml`` (``~/.config/konductor/config.toml``)::

    namespace = "ml"
    output = "json"            # text | json | yaml
    context = "prod"
    kubeconfig = "~/.kube/prod"

    [ttl]                      # seconds; or just  ttl = 30  for every kind
    default = 30
    lease = 15

Environment: ``KONDUCTOR_NAMESPACE``, ``KONDUCTOR_OUTPUT``, ``KONDUCTOR_CONTEXT``,
``KONDUCTOR_KUBECONFIG``, ``KONDUCTOR_TTL`` (every kind). Everything here is pure (the
environment and file system are passed in), so precedence is unit-tested exhaustively.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, final

import attrs

from konductor_sdk._kernel.errors import ConfigurationError

OUTPUT_FORMATS: Final = ("text", "json", "yaml")
OutputFormat = Literal["text", "json", "yaml"]

TTL_KINDS: Final = (
    "semaphore",
    "mutex",
    "rwmutex",
    "barrier",
    "lease",
    "gate",
    "once",
    "waitgroup",
)
BUILTIN_TTLS: Final[Mapping[str, int]] = {"default": 30, "lease": 15}
MIN_TTL: Final = 1
MAX_TTL: Final = 86_400

ENV_CONFIG: Final = "KONDUCTOR_CONFIG"
ENV_VARS: Final[Mapping[str, str]] = {
    "namespace": "KONDUCTOR_NAMESPACE",
    "output": "KONDUCTOR_OUTPUT",
    "context": "KONDUCTOR_CONTEXT",
    "kubeconfig": "KONDUCTOR_KUBECONFIG",
    "ttl": "KONDUCTOR_TTL",
}
_STRING_KEYS: Final = ("namespace", "output", "context", "kubeconfig")
Source = Literal["flag", "env", "config", "default"]


@final
@attrs.frozen
class Flags:
    """What the command line said; ``None`` means the flag was not given."""

    config: str | None = None
    namespace: str | None = None
    output: str | None = None
    context: str | None = None
    kubeconfig: str | None = None


@final
@attrs.frozen
class Settings:
    """The resolved settings of one invocation.

    Attributes:
        namespace: ``None`` lets the SDK decide (pod namespace, kubeconfig context,
            ``default``).
        kubeconfig: ``None`` lets the SDK decide (in-cluster, ``$KUBECONFIG``,
            ``~/.kube/config``).
        ttls: seconds by kind, with ``"default"`` for kinds not listed.
        config_path: the config file read, if any.
        sources: where each setting came from (for ``koncli config view``).
    """

    namespace: str | None = None
    output: OutputFormat = "text"
    context: str | None = None
    kubeconfig: str | None = None
    ttls: Mapping[str, int] = attrs.field(factory=lambda: dict(BUILTIN_TTLS))
    config_path: Path | None = None
    sources: Mapping[str, Source] = attrs.field(factory=dict)

    def ttl(self, kind: str) -> int:
        """The default TTL for entries of ``kind`` (``"semaphore"``, ``"lease"``...)."""
        return self.ttls.get(kind, self.ttls["default"])


def default_config_path(env: Mapping[str, str], home: Path) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(base) / "konductor" / "config.toml"


def config_path(flags: Flags, env: Mapping[str, str], home: Path) -> tuple[Path, bool]:
    """The config file to read, and whether it was named explicitly (then it must exist)."""
    if flags.config:
        return Path(flags.config).expanduser(), True
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser(), True
    return default_config_path(env, home), False


def load_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    """Read and validate a config file; ``{}`` if it is absent and not ``required``.

    Raises:
        ConfigurationError: unreadable, not TOML, unknown key or bad value.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigurationError(f"config file {str(path)!r} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigurationError(f"config file {str(path)!r}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    validate_config(data, where=str(path))
    return data


def validate_config(data: Mapping[str, Any], *, where: str) -> None:
    """Reject unknown keys and bad values, naming the key and the allowed range.

    Raises:
        ConfigurationError: the first problem found.
    """
    allowed = (*_STRING_KEYS, "ttl")
    for key, value in data.items():
        if key not in allowed:
            raise ConfigurationError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})"
            )
        if key == "ttl":
            if isinstance(value, Mapping):
                for kind, seconds in value.items():
                    if kind not in ("default", *TTL_KINDS):
                        raise ConfigurationError(
                            f"{where}: unknown key ttl.{kind} "
                            f"(allowed: default, {', '.join(TTL_KINDS)})"
                        )
                    check_ttl(seconds, f"{where}: ttl.{kind}")
            else:
                check_ttl(value, f"{where}: ttl")
        elif not isinstance(value, str) or not value:
            raise ConfigurationError(f"{where}: {key} must be a non-empty string, got {value!r}")
        elif key == "output":
            check_output(value, f"{where}: output")


def check_ttl(value: object, what: str) -> int:
    """``value`` as a TTL in seconds, or a ConfigurationError naming ``what``."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = int(value, 10)
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_TTL <= value <= MAX_TTL:
        raise ConfigurationError(
            f"{what} must be an integer number of seconds in [{MIN_TTL}, {MAX_TTL}], got {value!r}"
        )
    return value


def check_output(value: str, what: str) -> OutputFormat:
    if value not in OUTPUT_FORMATS:
        raise ConfigurationError(
            f"{what} must be one of {', '.join(OUTPUT_FORMATS)}, got {value!r}"
        )
    return value  # type: ignore[return-value]  # checked against the Literal's values


def resolve(flags: Flags, env: Mapping[str, str], config: Mapping[str, Any]) -> Settings:
    """Merge the sources: flags > environment > config file > built-in defaults.

    Raises:
        ConfigurationError: a value from the environment or a flag is out of range.
    """
    values: dict[str, str | None] = {}
    sources: dict[str, Source] = {}
    for key in _STRING_KEYS:
        flag = getattr(flags, key)
        env_value = env.get(ENV_VARS[key]) or None
        if flag is not None:
            values[key], sources[key] = flag, "flag"
        elif env_value is not None:
            values[key], sources[key] = env_value, "env"
        elif key in config:
            values[key], sources[key] = str(config[key]), "config"
        else:
            values[key], sources[key] = None, "default"
    what = {"flag": "--output", "env": ENV_VARS["output"]}.get(sources["output"], "output")
    output = check_output(values["output"] or "text", what)

    ttls = dict(BUILTIN_TTLS)
    sources["ttl"] = "default"
    file_ttl = config.get("ttl")
    if isinstance(file_ttl, Mapping):
        ttls.update({k: check_ttl(v, f"ttl.{k}") for k, v in file_ttl.items()})
        sources["ttl"] = "config"
    elif file_ttl is not None:
        ttls = {"default": check_ttl(file_ttl, "ttl")}
        sources["ttl"] = "config"
    env_ttl = env.get(ENV_VARS["ttl"])
    if env_ttl:
        ttls = {"default": check_ttl(env_ttl, ENV_VARS["ttl"])}
        sources["ttl"] = "env"

    kubeconfig = values["kubeconfig"]
    return Settings(
        namespace=values["namespace"],
        output=output,
        context=values["context"],
        kubeconfig=os.path.expanduser(kubeconfig) if kubeconfig else None,
        ttls=ttls,
        sources=sources,
    )


def load(flags: Flags, env: Mapping[str, str], home: Path) -> Settings:
    """Find, read and merge everything for one invocation.

    Raises:
        ConfigurationError: a bad config file, environment variable or flag value.
    """
    path, required = config_path(flags, env, home)
    data = load_config_file(path, required=required)
    settings = resolve(flags, env, data)
    return attrs.evolve(settings, config_path=path if data or required else None)

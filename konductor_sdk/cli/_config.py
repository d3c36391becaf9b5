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

    retry_budget = 30          # seconds of an unreachable API server before waits fail

Environment: ``KONDUCTOR_NAMESPACE``, ``KONDUCTOR_OUTPUT``, ``KONDUCTOR_CONTEXT``,
``KONDUCTOR_KUBECONFIG``, ``KONDUCTOR_TTL`` (every kind), ``KONDUCTOR_RETRY_BUDGET``.
Everything here is pure (the environment and file system are passed in), so precedence is
unit-tested exhaustively. (Plain dataclasses, not attrs: ``koncli --help`` loads this.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, final

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._kernel.names import check_namespace

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

DEFAULT_RETRY_BUDGET: Final = 30.0
IN_CLUSTER: Final = "the pod's service account (in-cluster)"

ENV_CONFIG: Final = "KONDUCTOR_CONFIG"
ENV_VARS: Final[Mapping[str, str]] = {
    "namespace": "KONDUCTOR_NAMESPACE",
    "output": "KONDUCTOR_OUTPUT",
    "context": "KONDUCTOR_CONTEXT",
    "kubeconfig": "KONDUCTOR_KUBECONFIG",
    "ttl": "KONDUCTOR_TTL",
    "retry_budget": "KONDUCTOR_RETRY_BUDGET",
}
FLAGS: Final[Mapping[str, str]] = {
    "namespace": "-n/--namespace",
    "output": "-o/--output",
    "context": "--context",
    "kubeconfig": "--kubeconfig",
    "retry_budget": "--retry-budget",
    "config": "--config",
}
_STRING_KEYS: Final = ("namespace", "output", "context", "kubeconfig")
Source = Literal["flag", "env", "config", "default"]


@final
@dataclasses.dataclass(frozen=True)
class Flags:
    """What the command line said; ``None`` means the flag was not given."""

    config: str | None = None
    namespace: str | None = None
    output: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    retry_budget: str | None = None


@final
@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings of one invocation.

    Attributes:
        namespace: ``None`` lets the SDK decide (pod namespace, kubeconfig context,
            ``default``).
        kubeconfig: ``None`` lets the SDK decide (in-cluster, ``$KUBECONFIG``,
            ``~/.kube/config``).
        ttls: seconds by kind, with ``"default"`` for kinds not listed.
        retry_budget: seconds of an unreachable API server before a wait fails.
        config_path: the config file read, if any.
        sources: where each setting came from (for ``koncli config view``).
    """

    namespace: str | None = None
    output: OutputFormat = "text"
    context: str | None = None
    kubeconfig: str | None = None
    ttls: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(BUILTIN_TTLS))
    retry_budget: float = DEFAULT_RETRY_BUDGET
    config_path: Path | None = None
    sources: Mapping[str, Source] = dataclasses.field(default_factory=dict)

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
    allowed = (*_STRING_KEYS, "ttl", "retry_budget")
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
        elif key == "retry_budget":
            check_retry_budget(value, f"{where}: retry_budget")
        elif not isinstance(value, str) or not value:
            raise ConfigurationError(f"{where}: {key} must be a non-empty string, got {value!r}")
        elif key == "output":
            check_output(value, f"{where}: output")
        elif key == "namespace":
            check_namespace(value, field=f"{where}: namespace")


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


def check_retry_budget(value: object, what: str) -> float:
    """``value`` as a retry budget in seconds (``inf``: forever), or a ConfigurationError."""
    number: float = math.nan
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if not number >= 0:
        raise ConfigurationError(
            f"{what} must be a number of seconds >= 0 (inf: retry forever), got {value!r}"
        )
    return number


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
    output = check_output(values["output"] or "text", where("output", sources))
    if values["namespace"] is not None:
        check_namespace(values["namespace"], field=where("namespace", sources))

    retry_budget = DEFAULT_RETRY_BUDGET
    sources["retry_budget"] = "default"
    candidates: list[tuple[Source, object]] = [
        ("flag", flags.retry_budget),
        ("env", env.get(ENV_VARS["retry_budget"]) or None),
        ("config", config.get("retry_budget")),
    ]
    for source, raw in candidates:
        if raw is not None:
            sources["retry_budget"] = source
            retry_budget = check_retry_budget(raw, where("retry_budget", sources))
            break

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
        retry_budget=retry_budget,
        sources=sources,
    )


def where(key: str, sources: Mapping[str, Source]) -> str:
    """How the user set ``key``, in the words they used (flag, variable or file key)."""
    return {"flag": FLAGS.get(key, key), "env": ENV_VARS.get(key, key)}.get(sources[key], key)


def effective_kubeconfig(settings: Settings, env: Mapping[str, str], home: Path) -> tuple[str, str]:
    """The kubeconfig the SDK will read for ``settings`` and where that choice came from
    (``("/path", "--kubeconfig")``, ``("/path", "$KUBECONFIG")``, ``("in-cluster",
    "service account")``...), as the SDK's ``Client`` decides it."""
    if settings.kubeconfig is not None:
        return settings.kubeconfig, where("kubeconfig", settings.sources)
    kubeconfig = env.get("KUBECONFIG", "")
    if "KUBERNETES_SERVICE_HOST" in env and not kubeconfig:
        return "in-cluster", IN_CLUSTER
    if kubeconfig:
        first = kubeconfig.split(os.pathsep)[0]
        more = " (only its first file is read)" if os.pathsep in kubeconfig else ""
        return first, f"$KUBECONFIG{more}"
    return str(home / ".kube" / "config"), "default"


def load(flags: Flags, env: Mapping[str, str], home: Path) -> Settings:
    """Find, read and merge everything for one invocation.

    Raises:
        ConfigurationError: a bad config file, environment variable or flag value.
    """
    path, required = config_path(flags, env, home)
    data = load_config_file(path, required=required)
    settings = resolve(flags, env, data)
    return dataclasses.replace(settings, config_path=path if data or required else None)

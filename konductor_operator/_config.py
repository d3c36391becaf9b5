"""The operator's configuration: one frozen, validated object built from flags/env."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal, final

import attrs

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk.election import ElectionConfig

from ._gate_http import AllowedPrefix

LogFormat = Literal["json", "text"]
MetricsAuth = Literal["none", "kubernetes"]
METRICS_AUTH: Final = ("none", "kubernetes")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _namespaces(value: Iterable[str] | None) -> tuple[str, ...] | None:
    # An empty list means "all namespaces", like no --namespace flag at all.
    return tuple(value) if value else None


def _whole_seconds(value: float) -> int:
    # The election Lease records whole seconds; 4.0 is fine, 4.5 is rejected (below).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value  # type: ignore[return-value]


def _upper(value: str) -> str:
    return str(value).upper()


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@final
@attrs.frozen(kw_only=True)
class OperatorConfig:
    """Everything the operator's flags and environment set.

    Attributes:
        namespaces: namespaces to manage; ``None`` for all.
        metrics_host / metrics_port: where ``/metrics``, ``/healthz`` and ``/readyz`` are
            served; port 0 disables the server. The host defaults to loopback: in a pod the
            manifests bind ``0.0.0.0`` (the kubelet probes the pod IP) and set
            ``metrics_auth``.
        metrics_auth: ``none``, or ``kubernetes``: ``/metrics`` needs a bearer token that
            passes a TokenReview and may ``get`` the non-resource URL ``/metrics``
            (SubjectAccessReview). The probes are never authenticated.
        metrics_tls_cert / metrics_tls_key: PEM files; when set (both), the server speaks
            HTTPS only, so bearer tokens never cross the network in the clear.
        leader_elect: elect one active replica (off: this process is always active).
        lease_name / lease_namespace: the Konductor Lease used for the election;
            namespace ``None``: the client's namespace (the pod's own).
        lease_duration / renew_deadline / retry_period: election timing, seconds;
            ``lease_duration > renew_deadline > 1.2 * retry_period > 0`` (client-go's rule).
        identity: this replica's candidate id; default: the client's holder id.
        workers: concurrent reconciles.
        resync_seconds: how often every cached object is re-checked without any event.
        event_rate / event_burst: the whole operator's budget of Event writes (per second,
            and burst): what bounds the load Events put on etcd.
        log_level / log_format: logging.
        kubeconfig: kubeconfig path; default: in-cluster / ``$KUBECONFIG``.
        enable_http_probes / http_probe_allow: for controllers that probe HTTP endpoints
            (the Gate controller): off by default; the URL prefixes (scheme, host, port,
            path prefix) probes may reach when on.
        cel_workers: worker processes evaluating Gate CEL conditions (a bounded pool,
            served round-robin per gate).
        forbidden_log_interval: seconds between two log lines about the same reference
            the operator may not watch (e.g. a gate naming a Secret).
    """

    namespaces: tuple[str, ...] | None = attrs.field(default=None, converter=_namespaces)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8080
    metrics_auth: MetricsAuth = "none"
    metrics_tls_cert: str | None = None
    metrics_tls_key: str | None = None
    leader_elect: bool = True
    lease_name: str = "konductor-operator"
    lease_namespace: str | None = None
    lease_duration: int = attrs.field(default=15, converter=_whole_seconds)
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str | None = None
    workers: int = 4
    resync_seconds: float = 300.0
    event_rate: float = 20.0
    event_burst: int = 50
    log_level: str = attrs.field(default="INFO", converter=_upper)
    log_format: LogFormat = "json"
    kubeconfig: str | None = None
    enable_http_probes: bool = False
    http_probe_allow: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    cel_workers: int = 2
    forbidden_log_interval: float = 300.0

    def __attrs_post_init__(self) -> None:
        for ns in self.namespaces or ():
            if not _DNS_LABEL.match(ns) or len(ns) > 63:
                raise ConfigurationError(
                    f"namespace must be a DNS-1123 label (lowercase alphanumerics and '-', "
                    f"at most 63 characters), got {ns!r}"
                )
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError(
                f"metrics_port must be in 0..65535 (0 disables), got {self.metrics_port}"
            )
        if not _DNS_SUBDOMAIN.match(self.lease_name) or len(self.lease_name) > 253:
            raise ConfigurationError(
                f"lease_name must be a DNS-1123 subdomain, got {self.lease_name!r}"
            )
        if isinstance(self.lease_duration, bool) or not isinstance(self.lease_duration, int):
            raise ConfigurationError(
                f"lease_duration must be whole seconds, got {self.lease_duration!r}"
            )
        if self.lease_namespace is not None and not _DNS_LABEL.match(self.lease_namespace):
            raise ConfigurationError(
                f"lease_namespace must be a DNS-1123 label, got {self.lease_namespace!r}"
            )
        if not self.retry_period > 0:
            raise ConfigurationError(f"retry_period must be > 0 s, got {self.retry_period:g}")
        if not self.renew_deadline > 1.2 * self.retry_period:
            raise ConfigurationError(
                f"renew_deadline must be > 1.2 * retry_period ({1.2 * self.retry_period:g} s), "
                f"got {self.renew_deadline:g}"
            )
        if not self.lease_duration > self.renew_deadline:
            raise ConfigurationError(
                f"lease_duration must be > renew_deadline ({self.renew_deadline:g} s), "
                f"got {self.lease_duration:g}"
            )
        if self.identity is not None and not self.identity.strip():
            raise ConfigurationError("identity must not be empty")
        # The elector's own checks (whole-second lease_duration in 1..86400...), up front.
        self.election_config(identity=self.identity, namespace=self.lease_namespace)
        if not 1 <= self.workers <= 256:
            raise ConfigurationError(f"workers must be in 1..256, got {self.workers}")
        if not 1.0 <= self.resync_seconds <= 86_400.0:
            raise ConfigurationError(
                f"resync_seconds must be in 1..86400, got {self.resync_seconds:g}"
            )
        if not 0.1 <= self.event_rate <= 1000.0:
            raise ConfigurationError(
                f"event_rate must be in 0.1..1000 writes/s, got {self.event_rate:g}"
            )
        if not 1 <= self.event_burst <= 10_000:
            raise ConfigurationError(f"event_burst must be in 1..10000, got {self.event_burst}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigurationError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.log_format not in ("json", "text"):
            raise ConfigurationError(
                f"log_format must be 'json' or 'text', got {self.log_format!r}"
            )
        if self.metrics_auth not in METRICS_AUTH:
            raise ConfigurationError(
                f"metrics_auth must be one of {', '.join(METRICS_AUTH)}, got {self.metrics_auth!r}"
            )
        if (self.metrics_tls_cert is None) != (self.metrics_tls_key is None):
            raise ConfigurationError(
                "metrics_tls_cert and metrics_tls_key must be given together, got "
                f"cert={self.metrics_tls_cert!r}, key={self.metrics_tls_key!r}"
            )
        for prefix in self.http_probe_allow:
            AllowedPrefix.parse(prefix)  # raises ConfigurationError naming the entry
        if not 1 <= self.cel_workers <= 16:
            raise ConfigurationError(f"cel_workers must be in 1..16, got {self.cel_workers}")
        if not 1.0 <= self.forbidden_log_interval <= 86_400.0:
            raise ConfigurationError(
                f"forbidden_log_interval must be in 1..86400 s, got {self.forbidden_log_interval:g}"
            )

    @property
    def http_probe_prefixes(self) -> tuple[AllowedPrefix, ...]:
        """:attr:`http_probe_allow`, parsed."""
        return tuple(AllowedPrefix.parse(p) for p in self.http_probe_allow)

    def election_config(self, *, identity: str | None, namespace: str | None) -> ElectionConfig:
        """The :class:`~konductor_sdk.election.ElectionConfig` these flags describe."""
        return ElectionConfig(
            self.lease_name,
            identity=identity,
            namespace=namespace,
            lease_duration=self.lease_duration,
            renew_deadline=self.renew_deadline,
            retry_period=self.retry_period,
            release_on_cancel=True,
        )

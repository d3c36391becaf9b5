"""``konductor-operator`` / ``python -m konductor_operator``: run one operator replica.

Every flag can also be set from the environment as ``KONDUCTOR_OPERATOR_<FLAG>`` (dashes
become underscores; repeatable flags take a space-separated list), e.g.
``KONDUCTOR_OPERATOR_NAMESPACE="team-a team-b"``.
"""

from __future__ import annotations

import signal

import anyio
import click

from konductor_sdk._kernel.client import defer_kubernetes_models
from konductor_sdk._kernel.errors import ConfigurationError

from ._config import LOG_LEVELS, OperatorConfig
from ._logging import configure_logging
from ._operator import Operator


@click.command(context_settings={"auto_envvar_prefix": "KONDUCTOR_OPERATOR"})
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace to manage (repeatable); default: all namespaces.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=8080,
    show_default=True,
    help="Port of /metrics, /healthz and /readyz; 0 disables.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind the metrics port to (0.0.0.0 in a pod: the kubelet probes it).",
)
@click.option(
    "--metrics-auth",
    type=click.Choice(["none", "kubernetes"]),
    default="none",
    show_default=True,
    help="kubernetes: /metrics needs a bearer token allowed `get` on /metrics "
    "(TokenReview + SubjectAccessReview). Probes are never authenticated.",
)
@click.option(
    "--metrics-tls-cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM certificate (chain): serve /metrics and the probes over HTTPS only.",
)
@click.option(
    "--metrics-tls-key",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM private key of --metrics-tls-cert.",
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=True,
    show_default=True,
    help="Elect one active replica (disable only for a single replica).",
)
@click.option(
    "--lease-name",
    default="konductor-operator",
    show_default=True,
    help="Konductor Lease used for the election.",
)
@click.option(
    "--lease-namespace",
    default=None,
    help="Namespace of the election Lease; default: the operator's own.",
)
@click.option(
    "--lease-duration",
    type=int,
    default=15,
    show_default=True,
    help="Seconds a standby waits without seeing a renewal before taking over.",
)
@click.option(
    "--renew-deadline",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds the leader keeps trying to renew before stepping down.",
)
@click.option(
    "--retry-period",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between election attempts.",
)
@click.option("--identity", default=None, help="Candidate id; default: pod name + UID.")
@click.option("--workers", type=int, default=4, show_default=True, help="Concurrent reconciles.")
@click.option(
    "--resync-seconds",
    type=float,
    default=300.0,
    show_default=True,
    help="Re-check every cached object this often without an event.",
)
@click.option(
    "--event-rate",
    type=float,
    default=20.0,
    show_default=True,
    help="Event writes per second, whole operator (bounds the load on etcd).",
)
@click.option("--event-burst", type=int, default=50, show_default=True, help="Event write burst.")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Kubeconfig file; default: in-cluster config, else $KUBECONFIG.",
)
@click.option(
    "--enable-http-probes/--disable-http-probes",
    default=False,
    show_default=True,
    help="Let controllers (Gate) probe HTTP endpoints.",
)
@click.option(
    "--http-probe-allow",
    "http_probe_allow",
    multiple=True,
    metavar="URL-PREFIX",
    help="URL prefix Gate HTTP probes may reach: scheme://host[:port]/path "
    "(repeatable; port and path prefix are enforced).",
)
@click.option(
    "--cel-workers",
    type=int,
    default=2,
    show_default=True,
    help="Worker processes for Gate CEL conditions (served round-robin per gate).",
)
@click.option(
    "--forbidden-log-interval",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds between log lines about a reference the operator may not watch.",
)
def main(**flags: object) -> None:
    """Run the Konductor operator: reaping, timeouts, status aggregation, events, metrics."""
    try:
        config = OperatorConfig(**flags)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from exc
    configure_logging(config.log_level, config.log_format)
    try:
        anyio.run(_run, config, backend="asyncio")
    except BaseExceptionGroup as group:
        # A bad kubeconfig (or another configuration problem found while connecting) is
        # a usage error, not a crash: say it in one line.
        bad = group.subgroup(ConfigurationError)
        if bad is None:
            raise
        raise click.ClickException(str(_first(bad))) from None


def _first(group: BaseExceptionGroup[ConfigurationError]) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


async def _run(config: OperatorConfig) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, tg.cancel_scope)
        await Operator(config).run()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            # Cancelling unwinds everything: controllers stop, the elector releases.
            scope.cancel()
            return


def entry_point() -> None:
    """The ``konductor-operator`` executable and ``python -m konductor_operator``: :func:`main`
    in a process of the operator's own."""
    # Nothing in this process uses kubernetes_asyncio's generated API and model classes,
    # and importing them costs ~33 MiB of RSS, more than a third of an idle operator.
    # (Not in main(): tests call it in a process that is not the operator's.)
    defer_kubernetes_models()
    main()


if __name__ == "__main__":
    entry_point()

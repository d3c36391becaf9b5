"""The root command, the options every command shares, and the async runner.

Global options (``-n``, ``-o``, ``--kubeconfig``, ``--context``, ``--config``) are accepted
both before the subcommand and after it (``koncli -n ml semaphore get gpu`` and
``koncli semaphore get gpu -n ml`` are the same). Their callbacks store the values on the
root context, so they are known even while the shell is completing a word.

Commands are ``async`` functions run by :func:`run_async`, which also turns SIGINT and
SIGTERM into cancellation: a waiter leaves its queue and releases what it was granted
(the SDK's acquire is cancellation-correct), then the process exits 130 (143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from . import _config
from ._config import Flags, OutputFormat, Settings
from ._exitcodes import Interrupted, WaitTimedOut

if TYPE_CHECKING:
    import anyio

    from konductor_sdk import Client, Identity

T = TypeVar("T")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    error (API error, not found, forbidden, server unreachable, a bulk item failed)
  2    usage error (bad flag, value or config file; nothing was written)
  3    --timeout passed before the wait finished
  4    would block (--nowait and the primitive was not free)
  5    lost: a permit or lease ended while held (run: child terminated)
  126  run: command not executable;  127  run: command not found
  130  interrupted by SIGINT; 128+N for signal N (143 for SIGTERM)
  koncli run otherwise exits with the child's exit code.
"""


@dataclasses.dataclass
class AppState:
    """Per-invocation state on the root context: raw flags, then resolved settings."""

    flags: dict[str, str] = dataclasses.field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """Settings from defaults, config file, environment and flags (resolved once).

        Raises:
            ConfigurationError: a bad config file, environment variable or flag.
        """
        if self._settings is None:
            flags = Flags(**self.flags)
            self._settings = _config.load(flags, os.environ, Path.home())
        return self._settings


def state(ctx: click.Context | None = None) -> AppState:
    ctx = ctx or click.get_current_context()
    return ctx.find_root().ensure_object(AppState)


def _store_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name is not None:
        state(ctx).flags[param.name] = str(value)
    return value


_GLOBAL_OPTIONS: list[Callable[[F], F]] = [
    click.option(
        "-n",
        "--namespace",
        help="Namespace of the objects [env KONDUCTOR_NAMESPACE; default: the pod's, "
        "else the kubeconfig context's, else 'default'].",
        callback=_store_flag,
        expose_value=False,
    ),
    click.option(
        "-o",
        "--output",
        type=click.Choice(_config.OUTPUT_FORMATS),
        help="Output format [env KONDUCTOR_OUTPUT; default: text].",
        callback=_store_flag,
        expose_value=False,
    ),
    click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        help="Kubeconfig file [env KONDUCTOR_KUBECONFIG, KUBECONFIG; in a pod: in-cluster].",
        callback=_store_flag,
        expose_value=False,
    ),
    click.option(
        "--context",
        help="Kubeconfig context [env KONDUCTOR_CONTEXT].",
        callback=_store_flag,
        expose_value=False,
    ),
    click.option(
        "--config",
        type=click.Path(dir_okay=False),
        help="Config file [env KONDUCTOR_CONFIG; default ~/.config/konductor/config.toml].",
        callback=_store_flag,
        expose_value=False,
    ),
    click.option(
        "--retry-budget",
        type=click.FloatRange(min=0),
        metavar="SECONDS",
        help="How long an unreachable API server is retried before a command fails "
        "(exit 1) [env KONDUCTOR_RETRY_BUDGET; default 30; inf: forever].",
        callback=_store_flag,
        expose_value=False,
    ),
]


def global_options(func: F) -> F:
    """Add the shared options to a command (they may follow the subcommand)."""
    for option in reversed(_GLOBAL_OPTIONS):
        func = option(func)
    return func


def timeout_option(func: F) -> F:
    return click.option(
        "--timeout",
        "wait_timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Give up waiting after this long (exit 3). Default: wait forever.",
    )(func)


def ttl_option(func: F) -> F:
    return click.option(
        "--ttl",
        type=click.IntRange(_config.MIN_TTL, _config.MAX_TTL),
        default=None,
        metavar="SECONDS",
        help="Entry time-to-live without renewal [config ttl; default 30, lease 15].",
    )(func)


@contextlib.contextmanager
def wait_limit(timeout: float | None, what: str) -> Iterator[None]:
    """Bound a wait by ``--timeout`` (``None``: forever); raise :class:`WaitTimedOut`."""
    if timeout is None:
        yield
        return
    import anyio

    try:
        with anyio.fail_after(timeout):
            yield
    except TimeoutError as exc:
        raise WaitTimedOut(f"timed out after {timeout:g}s waiting for {what}") from exc


def settings() -> Settings:
    return state().settings()


def output_format() -> OutputFormat:
    return settings().output


@contextlib.asynccontextmanager
async def open_client(cfg: Settings, *, identity: Identity | None = None) -> AsyncIterator[Client]:
    """A connected SDK client for ``cfg``; closed (background tasks cancelled) on exit.

    Raises:
        ConfigurationError: the kubeconfig or context is unusable, in koncli's words
            (which flag or variable chose it).
    """
    from konductor_sdk import Client, ConfigurationError

    path, source = _config.effective_kubeconfig(cfg, os.environ, Path.home())
    if source != _config.IN_CLUSTER and not Path(path).exists():  # noqa: ASYNC240 - one stat
        raise ConfigurationError(
            f"kubeconfig: no such file {path!r} (from {source}; choose one with "
            "--kubeconfig, KONDUCTOR_KUBECONFIG or KUBECONFIG)"
        )
    client = Client(
        kubeconfig=cfg.kubeconfig,
        context=cfg.context,
        namespace=cfg.namespace,
        identity=identity,
        retry_budget=cfg.retry_budget,
    )
    try:
        await client.connect()
    except ConfigurationError as exc:
        await client.aclose()
        raise ConfigurationError(cli_words(str(exc), cfg)) from exc
    except BaseException:
        await client.aclose()
        raise
    async with client:
        yield client


# SDK argument names in error messages -> what a koncli user types instead.
_SDK_ARGUMENTS = {
    "kubeconfig": "--kubeconfig",
    "context": "--context",
    "namespace": "-n/--namespace",
    "retry_budget": "--retry-budget",
}


def cli_words(message: str, cfg: Settings) -> str:
    """An SDK error message with its argument names (``pass context=``) said as koncli's
    flags, and the source of a bad context named."""
    text = re.sub(
        r"\b(kubeconfig|context|namespace|retry_budget)=",
        lambda m: _SDK_ARGUMENTS[m.group(1)],
        message,
    )
    if cfg.context is not None and f"context {cfg.context!r}" in text:
        text += f"; the context was chosen by {_config.where('context', cfg.sources)}"
    return text


async def _cancel_on_signal(scope: anyio.CancelScope, got: list[int]) -> None:
    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            got.append(signum)
            scope.cancel()
            return


async def _guarded(func: Callable[[], Awaitable[T]], handle_signals: bool) -> T:
    import anyio

    got: list[int] = []
    result: list[T] = []
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        if handle_signals:
            tg.start_soon(_cancel_on_signal, tg.cancel_scope, got)
        try:
            result.append(await func())
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:
            # Kept out of the task group so it is not wrapped in an ExceptionGroup.
            errors.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if errors:
        raise errors[0]
    if got and not result:
        raise Interrupted(got[0])
    return result[0]


def run_async(func: Callable[[], Awaitable[T]], *, handle_signals: bool = True) -> T:
    """Run ``func`` in a fresh asyncio loop; SIGINT/SIGTERM cancel it (exit 128+N)."""
    import anyio

    return anyio.run(_guarded, func, handle_signals, backend="asyncio")


def async_command(func: Callable[P, Awaitable[Any]]) -> Callable[P, None]:
    """Make an ``async def`` click callback run through :func:`run_async`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        run_async(lambda: func(*args, **kwargs))

    return wrapper


class KoncliGroup(click.Group):
    """A group whose subcommands (and subgroups, recursively) accept the global options."""

    group_class = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "namespace" for p in cmd.params):
            # On a built Command, click's option decorators append to its params: apply
            # them in display order (a function's decorators run bottom-up instead).
            for option in _GLOBAL_OPTIONS:
                option(cmd)
        super().add_command(cmd, name)

"""``koncli barrier ...``: create, status, wait/arrive/leave, reset, set-expected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import click

from . import _app, _verbs


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    from konductor_sdk._kernel.errors import ConfigurationError

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--label must be KEY=VALUE, got {item!r}")
        out[key] = value
    return out


@click.command("create")
@_verbs.name_arg("barrier")
@click.option("--expected", type=int, required=True, help="Parties that open it.")
@click.option("--quorum", type=int, default=None, help="Parties that open it after --last-call.")
@click.option("--last-call", type=float, default=None, metavar="SECONDS")
@click.option(
    "--timeout-seconds",
    type=float,
    default=None,
    metavar="SECONDS",
    help="spec.timeoutSeconds: a generation fails this long after its first arrival.",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.option("--exist-ok", is_flag=True, help="Succeed if it exists already.")
@_app.async_command
async def create(
    name: str,
    expected: int,
    quorum: int | None,
    last_call: float | None,
    timeout_seconds: float | None,
    labels: tuple[str, ...],
    exist_ok: bool,
) -> None:
    """Create a barrier for EXPECTED parties."""
    from konductor_sdk.barrier import Barrier

    async with _app.open_client(_app.settings()) as client:
        obj = Barrier(
            name,
            expected=expected,
            quorum=quorum,
            last_call=last_call,
            timeout=timeout_seconds,
            labels=_labels(labels),
            client=client,
        )
        _verbs.emit_status(await obj.create(exist_ok=exist_ok))


@click.command("status")
@_verbs.name_arg("barrier")
@_app.async_command
async def status(name: str) -> None:
    """Generation, phase, arrivals and who is missing."""
    from konductor_sdk.barrier import Barrier

    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await Barrier(name, expected=None, client=client).status())


@click.command("wait")
@_verbs.name_arg("barrier")
@click.option(
    "--expected", type=int, default=None, help="Create it with this many parties if absent."
)
@click.option("--party", default=None, help="This party's name (default: unique).")
@_app.ttl_option
@_app.timeout_option
@_verbs.quiet_option
@_app.async_command
async def wait(
    name: str,
    expected: int | None,
    party: str | None,
    ttl: int | None,
    wait_timeout: float | None,
    quiet: bool,
) -> None:
    """Arrive and wait until the barrier opens; print this party's index.

    The arrival is renewed while waiting; on Ctrl-C or --timeout it is withdrawn.
    Exit 1 if the barrier fails (reset, timeoutSeconds passed, deleted).
    """
    from konductor_sdk._kernel.objects import BARRIER
    from konductor_sdk.barrier import Barrier

    from . import _progress

    cfg = _app.settings()
    async with _app.open_client(cfg) as client:
        obj = Barrier(
            name,
            expected=expected,
            party=party,
            ttl=ttl or cfg.ttl("barrier"),
            client=client,
        )
        what = f"barrier {client.namespace}/{name}"
        with _app.wait_limit(wait_timeout, f"barrier {name}"):
            async with _progress.object_progress(
                client, BARRIER, client.namespace, name, _progress.barrier_line, what, quiet=quiet
            ):
                index = await obj.wait()
    _emit_index(name, index)


def _emit_index(name: str, index: int) -> None:
    from . import _output

    _output.emit({"name": name, "index": index}, _app.output_format(), lambda d: str(d["index"]))


@click.command("arrive")
@_verbs.name_arg("barrier")
@click.option("--expected", type=int, default=None, help="Create it with this many if absent.")
@click.option("--party", default=None, help="This party's name (default: unique).")
@_app.ttl_option
@_app.async_command
async def arrive(name: str, expected: int | None, party: str | None, ttl: int | None) -> None:
    """Arrive without waiting; print the generation joined.

    Nobody renews the arrival after koncli exits, so it counts for --ttl seconds
    (required) unless the barrier opens first. Use 'wait' to arrive and wait.
    """
    from konductor_sdk.barrier import Barrier

    seconds = _verbs.detached_ttl(ttl, for_pod=False)
    async with _app.open_client(_app.settings()) as client:
        obj = Barrier(name, expected=expected, party=party, ttl=seconds, client=client)
        generation = await obj.arrive()
        data = {"name": name, "party": obj.party, "generation": generation, "ttlSeconds": seconds}
    from . import _output

    _output.emit(data, _app.output_format(), lambda d: str(d["generation"]))


@click.command("reset")
@_verbs.name_arg("barrier")
@_app.async_command
async def reset(name: str) -> None:
    """Fail the waiting generation (waiters exit 1); the next arrival starts afresh."""
    from konductor_sdk.barrier import Barrier

    async with _app.open_client(_app.settings()) as client:
        done = await Barrier(name, expected=None, client=client).reset()
    click.echo(f"barrier {name}: {'reset' if done else 'nobody was waiting'}", err=True)


@click.command("set-expected")
@_verbs.name_arg("barrier")
@click.argument("expected", type=int)
@_app.async_command
async def set_expected(name: str, expected: int) -> None:
    """Change spec.expected (lowering it to the number arrived opens the barrier)."""
    from konductor_sdk.barrier import Barrier

    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await Barrier(name, expected=None, client=client).set_expected(expected))


VERBS: Final[Mapping[str, Sequence[tuple[str, click.Command]]]] = {
    "barrier": [(c.name or "", c) for c in (create, status, wait, arrive, reset, set_expected)],
}

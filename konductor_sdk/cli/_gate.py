"""``koncli gate ...``: create, status, wait, mark."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import click

from . import _app, _verbs

# --flag -> Condition class method; each condition is named after its object.
_REFS = {
    "job": "job",
    "barrier": "barrier",
    "semaphore": "semaphore",
    "lease": "lease",
    "gate": "gate",
    "once": "once",
    "waitgroup": "wait_group",
}


def conditions(external: tuple[str, ...], refs: dict[str, tuple[str, ...]]) -> list[Any]:
    """Condition objects from the flags (``[NS/]NAME`` references)."""
    from konductor_sdk.gate import Condition

    out = [Condition.external(name) for name in external]
    for flag, values in refs.items():
        factory = getattr(Condition, _REFS[flag])
        for ref in values:
            namespace, _, name = ref.rpartition("/")
            out.append(factory(f"{flag}-{name}", name, namespace=namespace or None))
    return out


@click.command("create")
@_verbs.name_arg("gate")
@click.option("--external", multiple=True, metavar="CONDITION", help="Set by 'gate mark'.")
@click.option("--job", "jobs", multiple=True, metavar="[NS/]JOB", help="Job completed.")
@click.option("--barrier", "barriers", multiple=True, metavar="[NS/]NAME", help="Barrier open.")
@click.option(
    "--semaphore", "semaphores", multiple=True, metavar="[NS/]NAME", help="A permit free."
)
@click.option("--lease", "leases", multiple=True, metavar="[NS/]NAME", help="Lease held.")
@click.option("--gate", "gates", multiple=True, metavar="[NS/]NAME", help="Gate open.")
@click.option("--once", "onces", multiple=True, metavar="[NS/]NAME", help="Once done.")
@click.option("--waitgroup", "waitgroups", multiple=True, metavar="[NS/]NAME", help="Counter 0.")
@click.option("--match", type=click.Choice(["all", "any"]), default="all", show_default=True)
@click.option("--timeout-seconds", type=int, default=None, help="spec.timeoutSeconds.")
@click.option("--latch", is_flag=True, help="Once open, stay open.")
@click.option("--exist-ok", is_flag=True, help="Succeed if it exists already.")
@_app.async_command
async def create(
    name: str,
    external: tuple[str, ...],
    jobs: tuple[str, ...],
    barriers: tuple[str, ...],
    semaphores: tuple[str, ...],
    leases: tuple[str, ...],
    gates: tuple[str, ...],
    onces: tuple[str, ...],
    waitgroups: tuple[str, ...],
    match: str,
    timeout_seconds: int | None,
    latch: bool,
    exist_ok: bool,
) -> None:
    """Create a gate over conditions (for CEL/HTTP/nested ones use 'koncli create -f')."""
    from konductor_sdk.gate import Gate

    refs = {
        "job": jobs,
        "barrier": barriers,
        "semaphore": semaphores,
        "lease": leases,
        "gate": gates,
        "once": onces,
        "waitgroup": waitgroups,
    }
    conds = conditions(external, refs)
    async with _app.open_client(_app.settings()) as client:
        status = await Gate(name, client=client).create(
            conds, match=match, timeout=timeout_seconds, latch=latch, exist_ok=exist_ok
        )
    _verbs.emit_status(status)


@click.command("status")
@_verbs.name_arg("gate")
@_app.async_command
async def status(name: str) -> None:
    """Phase and every condition (met, message, who marked it)."""
    from konductor_sdk.gate import Gate

    async with _app.open_client(_app.settings()) as client:
        _verbs.emit_status(await Gate(name, client=client).status())


@click.command("wait")
@_verbs.name_arg("gate")
@_app.timeout_option
@_verbs.quiet_option
@_app.async_command
async def wait(name: str, wait_timeout: float | None, quiet: bool) -> None:
    """Wait until the gate is open (exit 1 if it fails, 3 on --timeout)."""
    from konductor_sdk._kernel.objects import GATE
    from konductor_sdk.gate import Gate

    from . import _progress

    async with _app.open_client(_app.settings()) as client:
        what = f"gate {client.namespace}/{name}"
        with _app.wait_limit(wait_timeout, f"gate {name}"):
            async with _progress.object_progress(
                client, GATE, client.namespace, name, _progress.gate_line, what, quiet=quiet
            ):
                st = await Gate(name, client=client).wait()
    _verbs.emit_status(st)


@click.command("mark")
@_verbs.name_arg("gate")
@click.argument("condition")
@click.option("--met/--unmet", default=True, show_default=True)
@click.option("-m", "--message", default="", help="Why (shown in status).")
@_app.async_command
async def mark(name: str, condition: str, met: bool, message: str) -> None:
    """Set the external CONDITION of the gate (met by default)."""
    from konductor_sdk.gate import Gate

    async with _app.open_client(_app.settings()) as client:
        st = await Gate(name, client=client).mark(condition, met=met, message=message)
    _verbs.emit_status(st)


VERBS: Final[Mapping[str, Sequence[tuple[str, click.Command]]]] = {
    "gate": [(c.name or "", c) for c in (create, status, wait, mark)],
}

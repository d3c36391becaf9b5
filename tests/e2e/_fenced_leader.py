"""One leader-election candidate process that writes to a fenced resource while leading.

    python tests/e2e/_fenced_leader.py KUBECONFIG NAMESPACE IDENTITY LOG RESOURCE [FREEZE]

The *resource* is a JSON file standing for any downstream system: every write takes an
exclusive ``flock``, loads the :class:`konductor_sdk.Fence` kept in the file, admits the
writer's :class:`~konductor_sdk.FencingToken` (or refuses it: ``FencedOut``) and saves it
back, so the check and the write are atomic at the resource. Every attempt, and what the
candidate saw before it, is appended to LOG as one JSON line (``os.write`` on an
``O_APPEND`` descriptor: a frozen or killed process loses nothing written).

While leading, the body loops: read ``elector.is_leader``; if true, write with the term's
token. With FREEZE (a path), once that file exists the process stops *itself* with SIGSTOP
right after a successful write, i.e. right after its last check; the test sends SIGCONT
when someone else leads. The very next statement reads ``elector.is_leader`` (no other task
can run in between: nothing is awaited), logs it, and makes one deliberate write with the
old token, what a process that resumed between its check and its write would send.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from konductor_sdk import Client, Identity
from konductor_sdk.election import ElectionConfig, LeaderElector
from konductor_sdk.fencing import Fence, FencedOut, FencingToken

LEASE_DURATION = 3
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5


def write(resource: Path, token: FencingToken, who: str) -> str:
    """One write to the resource under ``token``: ``"accepted"`` or ``"fenced"``."""
    with resource.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        state: dict[str, Any] = json.loads(text) if text else {"fence": {}, "writes": []}
        fence = Fence(state["fence"])
        try:
            fence.admit(token)
        except FencedOut:
            return "fenced"
        state["fence"] = fence.snapshot()
        state["writes"].append({"who": who, "token": token.value})
        f.seek(0)
        f.truncate()
        f.write(json.dumps(state))
        return "accepted"


async def main(
    kubeconfig: str, namespace: str, identity: str, log: str, resource: str, freeze: str = ""
) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(kind: str, **fields: Any) -> None:
        line = {"kind": kind, "who": identity, "t": time.monotonic(), **fields}
        os.write(fd, (json.dumps(line) + "\n").encode())

    config = ElectionConfig(
        "fenced",
        identity=identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
    )
    async with Client(
        kubeconfig=kubeconfig, namespace=namespace, identity=Identity(holder=identity)
    ) as client:
        elector: LeaderElector

        async def lead(token: int) -> None:
            fencing = elector.fencing
            assert fencing is not None
            emit("started", token=token)
            while elector.is_leader:
                emit("write", token=token, result=write(Path(resource), fencing, identity))
                if freeze and Path(freeze).exists():  # noqa: ASYNC240 - no await on purpose
                    emit("freezing", token=token)
                    os.kill(os.getpid(), signal.SIGSTOP)  # ... until the test's SIGCONT
                    emit("resumed", token=token, is_leader=elector.is_leader)
                    emit("write", token=token, result=write(Path(resource), fencing, identity))
                    return
                await anyio.sleep(0.05)
            emit("noticed", token=token)

        elector = LeaderElector(
            config,
            client=client,
            on_started_leading=lead,
            on_stopped_leading=lambda: emit("stopped"),
        )
        emit("ready")
        await elector.run()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:7])

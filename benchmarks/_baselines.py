"""The floors Konductor is compared with: raw requests through the same client.

Each function uses ``client.store`` (the very :class:`~konductor_sdk._kernel.store.KubeStore` and
HTTP session the primitives use), so the only difference between a baseline and the
primitive it is paired with is the primitive's own logic and extra round trips.

Writes change ``metadata.annotations`` on the main resource: an update that changes
nothing is not written to etcd by the apiserver, so a baseline must really change the
object, and an annotation is the one field every kind (native or custom) accepts.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from konductor_sdk import Client, ConflictError, NotFoundError
from konductor_sdk._kernel.objects import KObject, ResourceKind

CONFIGMAP = ResourceKind("", "v1", "configmaps", "ConfigMap")
ANNOTATION = "bench.konductor.io/value"

_sequence = itertools.count()


def next_value() -> str:
    """A value never written before (so every write really changes the object)."""
    return f"{next(_sequence)}-{secrets.token_hex(3)}"


def annotation(obj: KObject | None) -> str | None:
    if obj is None:
        return None
    annotations: Mapping[str, str] = obj.metadata.get("annotations") or {}
    return annotations.get(ANNOTATION)


async def ensure_configmap(client: Client, name: str) -> None:
    try:
        await client.store.get(CONFIGMAP, client.namespace, name)
    except NotFoundError:
        body = {"metadata": {"name": name, "namespace": client.namespace}, "data": {}}
        await client.store.create(CONFIGMAP, client.namespace, body)


async def patch_annotation(client: Client, kind: ResourceKind, name: str, value: str) -> KObject:
    patch = {"metadata": {"annotations": {ANNOTATION: value}}}
    return await client.store.patch(kind, client.namespace, name, patch)


async def patch_round_trips(
    client: Client, kind: ResourceKind, name: str, count: int
) -> list[float]:
    """``count`` sequential merge PATCHes; each one's round trip in ms."""
    samples = []
    for _ in range(count):
        value = next_value()
        started = time.perf_counter()
        await patch_annotation(client, kind, name, value)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


@attrs.define
class Window:
    """The measured part of a load phase: operations are counted if they complete in
    ``[opens, closes]`` (monotonic); the time before ``opens`` is warm-up."""

    opens: float
    closes: float
    done: int = 0

    def record(self) -> None:
        if self.opens <= time.monotonic() <= self.closes:
            self.done += 1

    @property
    def open(self) -> bool:
        return time.monotonic() < self.closes


async def blind_writes(client: Client, kind: ResourceKind, name: str, window: Window) -> None:
    """Unconditional PATCHes (no resourceVersion: they never conflict) until the window
    closes."""
    while window.open:
        await patch_annotation(client, kind, name, next_value())
        window.record()


async def cas_writes(client: Client, kind: ResourceKind, name: str, window: Window) -> int:
    """Naive compare-and-swap until the window closes: GET, PUT with that resourceVersion,
    on 409 start over at once (no backoff). Returns the 409s seen inside the window."""
    conflicts = 0
    while window.open:
        obj = await client.store.get(kind, client.namespace, name)
        body: dict[str, Any] = dict(obj.raw)
        metadata = dict(obj.metadata)
        metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION: next_value()}
        body["metadata"] = metadata
        try:
            await client.store.replace(kind, body)
        except ConflictError:
            if window.opens <= time.monotonic() <= window.closes:
                conflicts += 1
            continue
        window.record()
    return conflicts


async def watch_latencies(
    writer: Client, watcher: Client, kind: ResourceKind, name: str, count: int
) -> list[float]:
    """Time from sending a PATCH with ``writer`` until ``watcher``'s shared watch has the
    new version in its cache (ms): the floor of any "wake up on a change" path."""
    watch = await watcher.watch(kind, watcher.namespace)
    samples = []
    for _ in range(count):
        value = next_value()
        seen_at = 0.0

        async def wait_for(expected: str) -> None:
            nonlocal seen_at
            while True:
                changed = watch.next_change(name)
                if annotation(watch.get(name)) == expected:
                    seen_at = time.perf_counter()
                    return
                await changed.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for, value)
            await anyio.lowlevel.checkpoint()  # the waiter takes its event before the write
            sent_at = time.perf_counter()
            await patch_annotation(writer, kind, name, value)
        samples.append((seen_at - sent_at) * 1000)
    return samples

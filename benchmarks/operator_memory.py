"""What the operator keeps per participant, without a control plane (a diagnostic).

::

    python -m benchmarks.operator_memory -n 20000 [--top 25]

Runs the real :class:`~konductor_operator.CoreController` in this process over an
in-memory store that answers lists with objects shaped and decoded as the API server's
(JSON text with uids, resourceVersions, timestamps, managedFields) and whose watches stay
silent. The participants are :mod:`benchmarks.operator_scale`'s: one Session each, half
of them granted in a Semaphore's ``status.holders`` (50 of every 100), the other half
queued as Claims. Once the controller is ready it prints the RSS growth and the Python
allocations still held (tracemalloc), per participant, and the biggest allocation sites
(tracing costs RSS of its own: ``--top 0`` measures RSS untraced).
Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio

from konductor_operator import CoreController
from konductor_operator._context import OperatorContext
from konductor_sdk import Client, Identity
from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.objects import (
    CLAIM,
    SEMAPHORE,
    SESSION,
    KObject,
    ObjectList,
    PatchType,
    ResourceKind,
    WatchEvent,
)
from konductor_sdk._kernel.store import _slim as slim
from konductor_sdk._machines.rules import registered

NS = "bench"
STAMP = "2026-01-01T00:00:00Z"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _metadata(name: str, rv: int) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": NS,
        "uid": str(uuid.uuid4()),
        "resourceVersion": str(rv),
        "generation": 1,
        "creationTimestamp": STAMP,
        "managedFields": [
            {
                "manager": "bench",
                "operation": "Update",
                "apiVersion": "sync.konductor.io/v1alpha1",
                "time": STAMP,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:holder": {}, "f:ttlSeconds": {}}},
            }
        ],
    }


def listing(n: int, per_object: int, holders: int) -> dict[str, list[str]]:
    """Each kind's objects as the API server's JSON text (decoded on every list)."""
    rv = 1000
    out: dict[str, list[str]] = {SESSION.plural: [], CLAIM.plural: [], SEMAPHORE.plural: []}
    grants: dict[str, dict[str, Any]] = {}
    claims: dict[str, set[str]] = {}
    rules = registered()["Semaphore"]
    assert rules.claim_counts is not None
    for i in range(n):
        rv += 1
        session = {
            "metadata": _metadata(f"p-{i:06d}", rv),
            "spec": {"holder": f"bench-{i}", "ttlSeconds": 86_400, "renewCount": 0},
        }
        out[SESSION.plural].append(json.dumps(session))
        sem, index = f"sem-{i // per_object:05d}", i % per_object
        if index < holders:
            grants.setdefault(sem, {})[str(index)] = {
                "weight": 1,
                "session": f"p-{i:06d}",
                "creator": "system:admin",
                "holder": f"bench-{i}",
                "grantedAt": STAMP,
                "token": index + 1,
            }
        else:
            claim = {
                "metadata": _metadata(f"c-{i:06d}", rv),
                "spec": {
                    "target": {"kind": "Semaphore", "name": sem},
                    "session": f"p-{i:06d}",
                    "holder": f"bench-{i}",
                },
            }
            out[CLAIM.plural].append(json.dumps(claim))
            claims.setdefault(sem, set()).add(f"c-{i:06d}")
    for sem, held in grants.items():
        rv += 1
        spec = {"permits": holders}
        status = rules.normalize(spec, {"holders": held, "fencingToken": len(held)})
        # The counts the operator would write: a loaded operator has nothing to do.
        status.update(rules.claim_counts(status, claims.get(sem, set())))
        obj = {"metadata": _metadata(sem, rv), "spec": spec, "status": status}
        out[SEMAPHORE.plural].append(json.dumps(obj))
    return out


class ListedStore:
    """Lists what :func:`listing` made (paged like the server when asked); watches stay
    silent; writes are refused (a loaded operator with nothing due writes nothing)."""

    def __init__(self, objects: dict[str, list[str]]) -> None:
        self._objects = objects
        self.stats: Counter[str] = Counter()

    async def list(
        self,
        kind: ResourceKind,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
    ) -> ObjectList:
        self.stats["get"] += 1
        texts = self._objects.get(kind.plural, [])
        start = int(continue_ or 0)
        end = len(texts) if not limit else min(len(texts), start + limit)
        items = []
        for text in texts[start:end]:
            raw = json.loads(text)
            raw.setdefault("apiVersion", kind.api_version)
            raw.setdefault("kind", kind.kind)
            slim(raw)  # as the real store decodes what the server sends
            items.append(KObject(raw))
        more = str(end) if end < len(texts) else ""
        return ObjectList(tuple(items), "999999", continue_=more)

    def watch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        return self._silent()

    async def _silent(self) -> AsyncIterator[WatchEvent]:
        await anyio.sleep_forever()
        yield WatchEvent("BOOKMARK", KObject({}))  # pragma: no cover - never reached

    async def get(self, kind: ResourceKind, namespace: str | None, name: str) -> KObject:
        raise NotFoundError(f"{kind.plural} {name}", status=404)

    async def create(
        self, kind: ResourceKind, namespace: str | None, body: Mapping[str, Any]
    ) -> KObject:
        raise NotFoundError(f"create {kind.plural}", status=404)

    async def replace(
        self, kind: ResourceKind, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> KObject:
        raise NotFoundError(f"replace {kind.plural}", status=404)

    async def patch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> KObject:
        raise NotFoundError(f"patch {kind.plural} {name}", status=404)

    async def delete(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> None:
        raise NotFoundError(f"delete {kind.plural} {name}", status=404)

    async def delete_collection(
        self,
        kind: ResourceKind,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        raise NotFoundError(f"deletecollection {kind.plural}", status=404)


async def measure(n: int, per_object: int, holders: int, top: int) -> None:
    objects = listing(n, per_object, holders)
    gc.collect()
    if top:
        tracemalloc.start(12)
    base_rss, (base_py, _) = rss_mib(), tracemalloc.get_traced_memory()
    before = tracemalloc.take_snapshot() if top else None
    client = Client(store=ListedStore(objects), namespace=NS, identity=Identity("operator"))
    await client.connect()
    ctx = OperatorContext.standalone(client, (NS,), logger=logging.getLogger("bench.operator"))
    core = CoreController(ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(core.run)
        await core.ready.wait()
        await anyio.sleep(0.5)
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot() if top else None
        grown = rss_mib() - base_rss
        kib = 1024 / n
        print(f"N={n:,}: {core.statistics()}")
        print(
            f"RSS +{grown:.1f} MiB ({grown * kib:.2f} KiB per participant); Python heap held "
            f"+{(held - base_py) / 2**20:.1f} MiB ({(held - base_py) / 1024 / n:.2f} KiB per "
            f"participant), peak +{(peak - base_py) / 2**20:.1f} MiB"
        )
        stats = after.compare_to(before, "traceback") if after and before else []
        for stat in stats[:top]:
            frames = [f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback)]
            print(
                f"{stat.size_diff / n:8.0f} B/participant "
                f"{stat.count_diff:8d} blocks  {' < '.join(frames[:5])}"
            )
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started
        tracked = Counter(type(o).__name__ for o in gc.get_objects())
        print(f"a full garbage collection: {took:.3f} s over {tracked.total():,} objects")
        print("  most of them:", ", ".join(f"{t} {n:,}" for t, n in tracked.most_common(6)))
        # What a resync costs: one pass over every object (nothing is due, nothing written).
        keys = core.tracker.keys()
        started = time.perf_counter()
        for key in keys:
            await core.reconcile(key)
        took = time.perf_counter() - started
        each = took / len(keys) * 1e3
        print(f"a resync: {len(keys)} passes in {took:.2f} s ({each:.2f} ms each)")
        tg.cancel_scope.cancel()
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--participants", type=int, default=20_000)
    parser.add_argument("--per-object", type=int, default=100)
    parser.add_argument("--holders", type=int, default=50)
    parser.add_argument(
        "--top", type=int, default=25, help="allocation sites shown (0: RSS only, untraced)"
    )
    args = parser.parse_args()
    anyio.run(measure, args.participants, args.per_object, args.holders, args.top)


if __name__ == "__main__":
    main()

"""Claims: one small object per participant, ordered by when the API server stored it.

A queued semaphore request, a lease candidacy, a batch of barrier arrivals each is one
``Claim`` naming its target primitive and its :mod:`session <konductor_sdk._kernel.sessions>`.
Nothing about it is ever written into the primitive's own object, so a thousand waiters do
not make that object bigger or its writes dearer, and a process that waits on one target
watches only that target's claims (a field-selected watch).

**Order.** A claim is never modified after it is created, so its ``resourceVersion`` is the
one the server gave it on creation. resourceVersions of one resource are comparable
integers (KEP-5504), so a queue is ordered by ``(-priority, resourceVersion)``: priority
first, then first come first served, and every process computes the same order.

**Completeness.** A process may act on its place in the queue only once its watch has
delivered its own claim: a watch delivers events in resourceVersion order, so by then it
has delivered every claim created before it (:meth:`ClaimQueue.seen`).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, final

import anyio

from konductor_sdk._kernel.client import Client
from konductor_sdk._kernel.errors import APIError, NotFoundError
from konductor_sdk._kernel.objects import CLAIM, SESSION, KObject, ResourceKind
from konductor_sdk._kernel.retry import backoff
from konductor_sdk._kernel.sessions import Session
from konductor_sdk._kernel.watch import KindWatch, rv_int

SESSION_LABEL: Final = "sync.konductor.io/session"
QUEUED_METADATA: Final = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")
"""What a queued claim keeps of its metadata (:func:`queued_form`)."""

OrderKey = tuple[int, int, str]


def target_selector(kind: ResourceKind, name: str) -> str:
    """The field selector of the claims of one primitive."""
    return f"spec.target.kind={kind.kind},spec.target.name={name}"


def order_key(claim: KObject) -> OrderKey:
    """``(-priority, creation resourceVersion, name)``: the service order of a queue."""
    priority = claim.spec.get("priority", 0)
    prio = priority if isinstance(priority, int) and not isinstance(priority, bool) else 0
    return (-prio, rv_int(claim.resource_version), claim.name)


async def create_claim(
    client: Client,
    session: Session,
    kind: ResourceKind,
    name: str,
    fields: Mapping[str, Any],
    *,
    claim_name: str | None = None,
) -> KObject:
    """Create the claim of this client on ``kind``/``name`` under ``session``.

    ``claim_name`` gives it a fixed name (idempotent creates); by default the server
    generates one from the target's name. The claim lives in its session's namespace,
    which must be the target's.
    """
    identity = client.identity
    spec: dict[str, Any] = {
        "target": {"kind": kind.kind, "name": name},
        "session": session.name,
        "holder": identity.holder,
        **fields,
    }
    if identity.pod is not None:
        spec["pod"] = identity.pod.to_dict()
    metadata: dict[str, Any] = {
        "namespace": session.namespace,
        "labels": {SESSION_LABEL: session.name},
        # Kubernetes' garbage collector deletes the claim with its session (in a real
        # cluster; the operator does the same without one).
        "ownerReferences": [
            {
                "apiVersion": SESSION.api_version,
                "kind": SESSION.kind,
                "name": session.name,
                "uid": session.uid,
            }
        ],
    }
    if claim_name is not None:
        metadata["name"] = claim_name
    else:
        metadata["generateName"] = f"{name[:200]}-"
    return await _create_answered(client, session.namespace, {"metadata": metadata, "spec": spec})


CREATE_ANSWER_BOUND: Final = 10.0
"""Longest a caller cancelled during its claim's create waits for the answer, to delete
the claim if it was stored."""


async def _create_answered(client: Client, namespace: str, body: dict[str, Any]) -> KObject:
    """Create a claim; if the caller is cancelled meanwhile, the claim is not left behind.

    A create once sent cannot be taken back: the server may store the claim after the
    caller stopped waiting, and a delete sent at the cancellation can overtake it (on
    another connection) and find nothing; the claim would then sit in the queue, ahead of
    later waiters, until its session ends. So the request runs in the client's background,
    and a cancelled caller waits (bounded) for its answer and deletes what it stored.
    """
    answered = anyio.Event()
    answer: list[KObject | BaseException] = []

    async def send() -> None:
        try:
            answer.append(await client.store.create(CLAIM, namespace, body))
        except Exception as exc:
            answer.append(exc)
        finally:
            answered.set()

    client.spawn(send)
    try:
        await answered.wait()
    except BaseException:
        with anyio.move_on_after(CREATE_ANSWER_BOUND, shield=True):
            await answered.wait()
            if answer and isinstance(answer[0], KObject):
                with contextlib.suppress(APIError, RuntimeError):
                    await delete_claim(client, answer[0])
        raise
    result = answer[0] if answer else RuntimeError("the client was closed")
    if isinstance(result, BaseException):
        raise result
    return result


async def delete_claim(client: Client, claim: KObject) -> None:
    """Delete ``claim`` (exactly that one: by uid); already gone is fine."""
    with contextlib.suppress(NotFoundError):
        await client.store.delete(CLAIM, claim.namespace, claim.name, uid=claim.uid)


log = logging.getLogger("konductor_sdk.claims")

_NO_ANSWER: Final = (0, 429, 500, 502, 503, 504)
CLOSE_BOUND: Final = 5.0
"""Longest a client's close waits for the claim deletions it still owes."""


async def delete_claim_retrying(
    client: Client, namespace: str, name: str, uid: str | None = None
) -> None:
    """Delete the claim ``name`` (with ``uid``: exactly that one), retrying briefly what got
    no answer; already gone is fine. One left behind lives until its session ends."""
    for attempt in range(1, 6):
        try:
            await client.store.delete(CLAIM, namespace, name, uid=uid)
            return
        except NotFoundError:
            return
        except APIError as exc:
            if attempt == 5 or exc.status not in _NO_ANSWER:
                log.warning("could not delete claim %s/%s: %s", namespace, name, exc)
                return
        except RuntimeError:
            return  # the client is closed: the operator deletes it with the session
        await anyio.sleep(backoff(attempt, base=0.1, cap=1.0))


_OWED: weakref.WeakKeyDictionary[Client, dict[tuple[str, str], str | None]] = (
    weakref.WeakKeyDictionary()
)


def delete_claim_soon(client: Client, namespace: str, name: str, uid: str | None = None) -> None:
    """Delete a served claim in the client's background, and for sure before the client
    closes (bounded by :data:`CLOSE_BOUND`): a served claim left behind would count as
    waiting again once its grant is released, ahead of everyone, for as long as its
    session lives (a detached ``koncli semaphore acquire`` exits right after its grant)."""
    owed = _OWED.get(client)
    if owed is None:
        owed = _OWED[client] = {}

        async def settle() -> None:
            with anyio.move_on_after(CLOSE_BOUND):
                for (ns, claim), claim_uid in list(owed.items()):
                    await delete_claim_retrying(client, ns, claim, claim_uid)

        client._add_close_hook(settle)
    owed[(namespace, name)] = uid

    async def delete() -> None:
        try:
            await delete_claim_retrying(client, namespace, name, uid)
        finally:
            owed.pop((namespace, name), None)

    try:
        client.spawn(delete)
    except RuntimeError:
        owed.pop((namespace, name), None)  # closed already: its session takes it along


def queued_form(raw: Mapping[str, Any]) -> None:
    """Reduce a claim's decoded JSON, in place, to what is ever read of a queued claim:
    its name, namespace, uid, resourceVersion, deletion mark and spec (without the
    target, which the watch's selector fixes).

    A process may cache a thousand claims of one target; as decoded, each is about 50
    objects (its keys are fresh strings per document: the JSON decoder memoizes keys only
    within one document). Labels, annotations and owner references are the API server's
    and the garbage collector's business, never the queue's. Keys become the interned
    literals and the session and holder strings, the same for all of one process's
    claims, are interned, so what is left per claim is its name, uid and resourceVersion.
    """
    if not isinstance(raw, dict):
        return
    metadata = raw.get("metadata")
    spec = raw.get("spec")
    kept_md = (
        {k: metadata[k] for k in QUEUED_METADATA if k in metadata}
        if isinstance(metadata, dict)
        else {}
    )
    if "namespace" in kept_md and isinstance(kept_md["namespace"], str):
        kept_md["namespace"] = sys.intern(kept_md["namespace"])
    kept_spec: dict[str, Any] = {}
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key != "target":
                kept_spec[sys.intern(key)] = sys.intern(value) if isinstance(value, str) else value
    raw.clear()
    raw["metadata"] = kept_md
    raw["spec"] = kept_spec


@final
class ClaimQueue:
    """The live claims of one target in service order, kept from a watch of them.

    Built on the target's field-selected watch; every process that waits on the target
    shares one per client. Reading it costs nothing: it is updated by the watch's events.

    The watch is this queue's alone (one per target and client, made by
    :func:`claim_queue`), so the queue keeps its claims, in the watch's cache too, in
    :func:`queued_form`: the objects are reduced in place as they arrive, before anyone
    else reads them.
    """

    def __init__(self, watch: KindWatch) -> None:
        self.watch = watch
        self._keys: dict[str, OrderKey] = {}
        self._order: list[OrderKey] = []
        self._objects: dict[str, KObject] = {}
        self.version = 0
        """Bumped on every change (a claim added or removed)."""
        for obj in watch.objects():
            self._on_event("ADDED", obj)
        self._remove_listener = watch.add_listener(self._on_event)

    def __repr__(self) -> str:
        return f"<ClaimQueue {self.watch.field_selector} claims={len(self._order)}>"

    def __len__(self) -> int:
        return len(self._order)

    def close(self) -> None:
        self._remove_listener()

    def _on_event(self, etype: str, obj: KObject) -> None:
        name = obj.name
        old = self._keys.pop(name, None)
        if old is not None:
            del self._order[bisect.bisect_left(self._order, old)]
            del self._objects[name]
        if etype != "DELETED":
            queued_form(obj.raw)
        if etype != "DELETED" and not obj.deleting:
            # A claim is immutable: it keeps the place it was first seen with.
            key = old if old is not None else order_key(obj)
            self._keys[name] = key
            self._objects[name] = obj
            bisect.insort(self._order, key)
        self.version += 1

    def next_change(self) -> anyio.Event:
        """An event set on the next change to the queue (the watch's: the queue is updated
        by its listener before the watch's event is set).

        Raises:
            APIError: the watch failed (forbidden, or unreachable past the retry budget).
        """
        return self.watch.next_any_change()

    def seen(self, name: str) -> bool:
        """Whether the claim ``name`` is in the queue (so all earlier claims are too)."""
        return name in self._keys

    def position(self, name: str) -> int | None:
        """0-based place of ``name`` in service order, ``None`` if not (or no longer) queued."""
        key = self._keys.get(name)
        return None if key is None else bisect.bisect_left(self._order, key)

    def ordered(self, limit: int | None = None) -> list[KObject]:
        """The claims in service order (the first ``limit`` of them)."""
        keys = self._order if limit is None else self._order[:limit]
        return [self._objects[key[2]] for key in keys]

    def iter_ordered(self) -> Callable[[], KObject | None]:
        """A cursor over the queue in service order (cheap for "walk until it stops fitting")."""
        keys = iter(list(self._order))

        def step() -> KObject | None:
            key = next(keys, None)
            return None if key is None else self._objects.get(key[2])

        return step

    def get(self, name: str) -> KObject | None:
        return self._objects.get(name)


@contextlib.asynccontextmanager
async def claim_queue(
    client: Client, kind: ResourceKind, name: str, namespace: str | None = None
) -> AsyncIterator[ClaimQueue]:
    """The :class:`ClaimQueue` of ``kind``/``name`` in ``namespace`` (default: the
    client's), shared by every user inside this block in this client."""
    await client.connect()
    async with client._watching(
        CLAIM, namespace or client.namespace, field_selector=target_selector(kind, name)
    ) as watch:
        queue = watch.attachments.get("claim_queue")
        if not isinstance(queue, ClaimQueue):
            queue = ClaimQueue(watch)
            watch.attachments["claim_queue"] = queue
        yield queue

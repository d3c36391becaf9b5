"""A holder whose shared watch fails (403, or the server unreachable past the client's retry
budget) is told its permit or lease is lost — it can no longer see a takeover — and the
client stays usable: the failure must not take its background task group down."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from konductor_sdk import Client, Lease, Mutex, UnreachableError
from konductor_sdk._kernel.objects import LEASE, MUTEX, ResourceKind

pytestmark = pytest.mark.anyio


async def fail_watch(
    client: Client, kind: ResourceKind, namespace: str, name: str, *, listened: bool = False
) -> None:
    """Fail the client's shared watch of ``kind`` once the holder follows ``name`` on it (a
    holder that starts later would get a new, healthy watch). ``listened``: the holder
    follows through a listener registered before its grant, not through ``name``'s event."""
    watch = client.cached_watch(kind, namespace)
    assert watch is not None
    with anyio.fail_after(30):
        while (
            not (listened and watch._failure_listeners) and (namespace, name) not in watch._events
        ):
            await anyio.lowlevel.checkpoint()
    watch._fail(UnreachableError("the API server went away (test)", budget=0))


async def test_a_mutex_holder_is_told_and_the_client_goes_on(
    client: Client, namespace: str
) -> None:
    permit = await Mutex("m", client=client).acquire(ttl=30)
    await fail_watch(client, MUTEX, namespace, "m", listened=True)
    with anyio.fail_after(30):
        reason = await permit.wait_lost()
    assert reason.startswith("cannot watch the object any more: the API server went away")
    with anyio.fail_after(30):
        again = await Mutex("other", client=client).acquire(ttl=30)  # a new watch
    await again.release()
    await permit.release()


async def test_a_lease_holder_is_told_and_the_client_goes_on(
    client: Client, namespace: str, make_client: Callable[..., Client]
) -> None:
    held = await Lease("l", ttl=10, client=client).acquire()
    await fail_watch(client, LEASE, namespace, "l")
    # A background lease that is lost gives its entry back: see that from another client.
    observer = make_client("observer")
    watch = await observer.watch(LEASE, namespace)
    with anyio.fail_after(30):
        while True:
            changed = watch.next_change("l")
            obj = watch.get("l")
            if obj is not None and held.key not in (obj.status.get("holders") or {}):
                break
            await changed.wait()
    assert held.lost
    assert "cannot watch the Lease any more" in str(held.lost_reason)
    with anyio.fail_after(30):
        other = await Lease("l2", ttl=10, client=client).acquire()
    await other.release()

"""Object-level ownership on every kind: another participant of the namespace can neither
delete an object, nor change its spec, nor take over its creator annotation.

(Per-entry rules — grants, arrivals, marks — are tested with each primitive.)
"""

from __future__ import annotations

import pytest

from konductor_sdk import Client, ForbiddenError, InvalidObjectError
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import bind_user
from tests.integration.test_crds import CRDS, kind_of, minimal_spec

pytestmark = pytest.mark.anyio
REFUSED = (ForbiddenError, InvalidObjectError)


@pytest.mark.parametrize("stem", sorted(CRDS))
async def test_another_user_cannot_delete_respec_or_adopt_an_object(
    stem: str, control_plane: ClusterHandle, namespace: str
) -> None:
    kind = kind_of(CRDS[stem])
    alice_cfg = await bind_user(control_plane, namespace, "alice")
    bob_cfg = await bind_user(control_plane, namespace, "bob")
    async with (
        Client(kubeconfig=alice_cfg, namespace=namespace) as alice,
        Client(kubeconfig=bob_cfg, namespace=namespace) as bob,
    ):
        await alice.connect()
        await bob.connect()
        body = {"metadata": {"name": "x"}, "spec": await minimal_spec(kind.kind, alice)}
        created = await alice.store.create(kind, namespace, body)
        assert created.creator == "alice"

        with pytest.raises(REFUSED, match="only its creator"):
            await bob.store.delete(kind, namespace, "x")
        with pytest.raises(REFUSED, match="only its creator"):
            await bob.store.patch(kind, namespace, "x", {"metadata": {"labels": {"mine": "yes"}}})
        with pytest.raises(REFUSED, match="immutable"):
            await bob.store.patch(
                kind,
                namespace,
                "x",
                {"metadata": {"annotations": {"sync.konductor.io/creator": "bob"}}},
            )
        # Its creator may do both.
        await alice.store.patch(kind, namespace, "x", {"metadata": {"labels": {"mine": "yes"}}})
        await alice.store.delete(kind, namespace, "x")

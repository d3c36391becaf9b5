"""Gate status ownership: a participant may mark external conditions, as itself, only."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk import Client, ForbiddenError, InvalidObjectError
from konductor_sdk._kernel.objects import GATE
from konductor_sdk.gate import Condition, Gate
from konductor_sdk.testing import ClusterHandle
from tests.integration._ownership import bind_user

pytestmark = pytest.mark.anyio
REFUSED = (ForbiddenError, InvalidObjectError)


async def test_only_external_conditions_can_be_marked_and_only_in_ones_own_name(
    control_plane: ClusterHandle, namespace: str
) -> None:
    alice_cfg = await bind_user(control_plane, namespace, "alice")
    bob_cfg = await bind_user(control_plane, namespace, "bob")
    async with (
        Client(kubeconfig=alice_cfg, namespace=namespace) as alice,
        Client(kubeconfig=bob_cfg, namespace=namespace) as bob,
    ):
        gate = Gate("release", client=alice)
        await gate.create([Condition.job("validated", "validate"), Condition.external("ok")])
        await bob.connect()

        async def put(status: dict[str, Any]) -> None:
            obj = await bob.store.get(GATE, namespace, "release")
            await bob.store.replace(GATE, obj.with_status(status), subresource="status")

        entry = {"name": "validated", "type": "Job", "met": True, "message": "forged"}
        with pytest.raises(REFUSED, match="may change only external conditions"):
            await put({"conditions": [entry]})
        with pytest.raises(REFUSED, match="derived fields"):
            await put({"phase": "Open"})
        failure = {
            "reason": "Timeout",
            "message": "forged",
            "specHash": "x",
            "at": "2026-01-01T00:00:00Z",
        }
        with pytest.raises(REFUSED, match="derived fields"):
            await put({"failure": failure})
        forged = {
            "name": "ok",
            "type": "External",
            "met": True,
            "markedBy": {"holder": "x", "username": "alice"},
        }
        with pytest.raises(REFUSED, match=r"must\s+record itself"):
            await put({"conditions": [forged]})
        # Marking an external condition as oneself is what participants may do.
        st = await Gate("release", client=bob).mark("ok")
        marked = {c.name: c for c in st.conditions}["ok"]
        assert marked.met
        assert marked.marked_by.get("username") == "bob"
        assert not st.open  # the Job condition is not met

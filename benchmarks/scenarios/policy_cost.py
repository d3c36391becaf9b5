"""Scenario 1b: what the server's rules cost one status write of the semaphore family.

The uncontended cycle is two status writes, and those two writes alone, sent raw, already
cost more than two annotation PATCHes (``uncontended``: "the same grant + release sent
raw"). This scenario takes the server apart: per configuration, the raw annotation PATCH
of ``uncontended`` and the SDK's own grant and release (captured, sent raw) on the same
object, as the admin and as a konductor-user, with

* ``all``: everything installed (what users run);
* ``no_policy``: without the binding of ``konductor-semaphore-grants`` (the
  ValidatingAdmissionPolicy that checks who wrote a grant);
* ``no_rules``: without the CRD's CEL rules (limits, slots, fencing counter...);
* ``none``: without either.

Each configuration's figure is the median, per write, of (status write - the annotation
PATCH sent just before it), over rounds that visit every configuration in turn. The rules
and the binding are put back at the end, whatever happens: the scenario leaves the
control plane as it found it.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any, ClassVar, Final, final

import anyio

from konductor_sdk import Client
from konductor_sdk._kernel.objects import SEMAPHORE, ResourceKind

from .._baselines import next_value, patch_annotation
from .._harness import Context, Scenario
from .._report import Measurement, Row
from .uncontended import Cycle, captured_cycle, replay

BINDINGS: Final = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
BINDING: Final = f"{BINDINGS}/konductor-semaphore-grants"
CRD: Final = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/semaphores.sync.konductor.io"
CONFIGS: Final = (
    ("all", True, True),
    ("no_policy", False, True),
    ("no_rules", True, False),
    ("none", False, False),
)
"""(name, with the grants policy, with the CRD's rules)."""
SETTLE_S: Final = 4.0
"""After a CRD or binding change, before measuring: the apiserver applies it
asynchronously (a new CRD handler, the policy's informer)."""


def _without_rules(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_rules(v) for k, v in value.items() if k != "x-kubernetes-validations"}
    if isinstance(value, list):
        return [_without_rules(v) for v in value]
    return value


@final
class PolicyCost(Scenario):
    name: ClassVar[str] = "policy_cost"
    number: ClassVar[str] = "1b"
    title: ClassVar[str] = "What the server's rules cost a grant or release write"
    rows: ClassVar[tuple[Row, ...]] = tuple(
        row
        for config, _, _ in CONFIGS
        for row in (
            Row(
                f"status write - annotation PATCH, {config.replace('_', ' ')}, admin",
                f"{config}.admin_extra_ms",
            ),
            Row(
                f"status write - annotation PATCH, {config.replace('_', ' ')}, konductor-user",
                f"{config}.user_extra_ms",
            ),
        )
    )
    requires_kinds: ClassVar[tuple[ResourceKind, ...]] = (SEMAPHORE,)
    requires: ClassVar[tuple[str, ...]] = ("konductor_sdk.semaphore",)
    default_repeat: ClassVar[tuple[int, int]] = (1, 2)
    repeat_cap_s: ClassVar[tuple[float, float]] = (180.0, 600.0)

    async def setup(self, ctx: Context) -> None:
        from konductor_sdk.semaphore import Semaphore

        self.rest = ctx.handle.rest()
        self.binding = await self._request("GET", BINDING)
        self.rules = (await self._request("GET", CRD))["spec"]
        self.clients: list[tuple[str, Client, str, Cycle]] = []
        for who, client in (
            ("admin", await ctx.client("policy-cost")),
            ("user", await ctx.user_client("policy-cost-user")),
        ):
            name = f"policy-cost-{who}"
            semaphore = Semaphore(name, permits=4, client=client)
            await semaphore.create(permits=4)
            await (await semaphore.acquire()).release()
            self.clients.append((who, client, name, await captured_cycle(client, semaphore)))

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await anyio.to_thread.run_sync(
            lambda: self.rest.request(method, path, body)
        )
        if status >= 300 and not (method == "DELETE" and status == 404):
            raise RuntimeError(f"{method} {path}: {status} {answer}")
        return answer

    async def _configure(self, policy: bool, rules: bool) -> None:
        present = (await anyio.to_thread.run_sync(lambda: self.rest.request("GET", BINDING)))[0]
        if policy and present == 404:
            body = copy.deepcopy(self.binding)
            body["metadata"] = {
                k: v for k, v in body["metadata"].items() if k in ("name", "labels")
            }
            await self._request("POST", BINDINGS, body)
        elif not policy and present == 200:
            await self._request("DELETE", BINDING)
        crd = await self._request("GET", CRD)
        crd["spec"] = copy.deepcopy(self.rules) if rules else _without_rules(self.rules)
        await self._request("PUT", CRD, crd)
        await anyio.sleep(SETTLE_S)

    async def run_once(self, ctx: Context, repeat: int) -> Measurement:
        rounds = ctx.size(full=2, quick=1)
        count = ctx.size(full=150, quick=20)
        extra: dict[str, list[float]] = {}
        try:
            for _ in range(rounds):
                for config, policy, rules in CONFIGS:
                    await self._configure(policy, rules)
                    for who, client, name, cycle in self.clients:
                        key = f"{config}.{who}_extra_ms"
                        extra.setdefault(key, []).extend(await _paired(client, name, cycle, count))
        finally:
            with anyio.CancelScope(shield=True):
                await self._configure(True, True)
        m = Measurement()
        for key, values in extra.items():
            m.add(key, statistics.median(values), "ms")
        m.notes.append(
            "per write: the median of (half a raw grant + release pair - the annotation "
            "PATCH sent just before it), so both see the same moment of the machine"
        )
        return m


async def _paired(client: Client, name: str, cycle: Cycle, count: int) -> list[float]:
    """``count`` times: an annotation PATCH, then ``cycle`` sent raw; per write, how much
    dearer the status write was (ms). The object each write returns is the next one's
    starting point: nothing is read between the two."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        obj = await patch_annotation(client, SEMAPHORE, name, next_value())
        patch = (time.perf_counter() - started) * 1000
        pair, _ = await replay(client, name, cycle, obj)
        samples.append(pair / 2 - patch)
    return samples


SCENARIO = PolicyCost()

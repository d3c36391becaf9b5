"""One process's view of a lease's line, fed events by hand (no server): who is ahead,
what is passed over, whom to wake."""

from __future__ import annotations

from typing import Any

import pytest

from konductor_sdk._engines.lease_view import LeaseView
from konductor_sdk._kernel.claims import ClaimQueue
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.objects import CLAIM, LEASE, KObject
from konductor_sdk._kernel.watch import KindWatch
from konductor_sdk._machines import lease as state

NS = "ns"


class FakeClient:
    def __init__(self) -> None:
        self.clock = FakeClock()


def claim(name: str, rv: int, priority: int = 0) -> KObject:
    return KObject(
        {
            "metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv), "uid": name},
            "spec": {"target": {"kind": "Lease", "name": "l"}, "priority": priority},
        }
    )


def lease(rv: int, status: dict[str, Any]) -> KObject:
    return KObject(
        {
            "metadata": {"name": "l", "namespace": NS, "resourceVersion": str(rv), "uid": "u"},
            "spec": {"ttlSeconds": 10},
            "status": state.normalize({}, status),
        }
    )


def held_by(token: int, claim_name: str | None) -> dict[str, Any]:
    entry = {"holder": "h", "creator": "u", "session": "s", "ttlSeconds": 10, "renewCount": 0}
    if claim_name:
        entry["claim"] = claim_name
    return {"holders": {f"k{token}": {**entry, "token": token}}, "fencingToken": token}


@pytest.fixture
def parts() -> tuple[LeaseView, KindWatch, KindWatch]:
    leases = KindWatch(None, LEASE, NS)  # type: ignore[arg-type]
    claims = KindWatch(None, CLAIM, NS)  # type: ignore[arg-type]
    view = LeaseView(FakeClient(), NS, "l", leases, ClaimQueue(claims))  # type: ignore[arg-type]
    return view, leases, claims


def test_a_served_claim_whose_delete_arrived_first_passes_over_nobody_alive(
    parts: tuple[LeaseView, KindWatch, KindWatch],
) -> None:
    view, leases, claims = parts
    leases._apply("ADDED", lease(1, {}))
    for name, rv in (("a", 10), ("b", 11), ("c", 12)):
        claims._apply("ADDED", claim(name, rv))
    mine = view.join()
    view.set_claim(mine, claim("c", 12))
    assert view.ahead(mine, 0) == 2
    # a is granted and deletes its claim; this process's claim watch delivers the delete
    # (with the deletion's resourceVersion) before its lease watch delivers the grant.
    claims._apply("DELETED", claim("a", 40))
    leases._apply("MODIFIED", lease(41, held_by(1, "a")))
    assert view.ahead(mine, 0) == 1  # b is still ahead: it was behind a, not before it
    leases._apply("MODIFIED", lease(42, {"fencingToken": 1}))
    obs = view.observation(mine, 0, "u")
    assert obs.ahead == 1
    verdict = state.judge({"ttlSeconds": 10}, {"fencingToken": 1}, obs, identity="c", priority=0)
    assert verdict.action == "wait"


def test_a_grant_behind_a_dead_head_passes_the_head_over(
    parts: tuple[LeaseView, KindWatch, KindWatch],
) -> None:
    view, leases, claims = parts
    leases._apply("ADDED", lease(1, {}))
    for name, rv in (("dead", 10), ("b", 11), ("c", 12)):
        claims._apply("ADDED", claim(name, rv))
    mine = view.join()
    view.set_claim(mine, claim("c", 12))
    assert view.ahead(mine, 0) == 2
    leases._apply("MODIFIED", lease(20, held_by(1, "b")))  # b went after waiting dead out
    assert view.ahead(mine, 0) == 0  # "dead" had its turn; b is served
    assert view.ahead(None, 0) == 1  # a caller without a claim: behind c


def test_only_the_first_local_candidate_is_woken(
    parts: tuple[LeaseView, KindWatch, KindWatch],
) -> None:
    view, leases, claims = parts
    leases._apply("ADDED", lease(1, held_by(1, None)))
    tickets = []
    for name, rv in (("x", 10), ("y", 11)):
        claims._apply("ADDED", claim(name, rv))
        ticket = view.join()
        view.set_claim(ticket, claim(name, rv))
        tickets.append(ticket)
    for t in tickets:
        t._event = type(t._event)()  # forget the wakeups of their own claims' arrival
    leases._apply("MODIFIED", lease(2, {"fencingToken": 1}))  # released
    assert [t._event.is_set() for t in tickets] == [True, False]
    view.leave(tickets[0])  # the first one got it and left: the next one is woken
    assert tickets[1]._event.is_set()


def test_a_grant_for_a_claim_not_seen_yet_passes_it_over_when_it_arrives(
    parts: tuple[LeaseView, KindWatch, KindWatch],
) -> None:
    view, leases, claims = parts
    leases._apply("ADDED", lease(1, {}))
    claims._apply("ADDED", claim("c", 12))
    mine = view.join()
    view.set_claim(mine, claim("c", 12))
    leases._apply("MODIFIED", lease(20, held_by(1, "late")))  # its claim watch lags
    claims._apply("ADDED", claim("late", 5))  # ahead of c, but served already
    assert view.ahead(mine, 0) == 0
    claims._apply("DELETED", claim("late", 30))
    assert view.ahead(mine, 0) == 0
    assert not view._passed_over  # nothing left behind

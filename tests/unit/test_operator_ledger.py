"""The session ledger: one record per session, its expiry clock, the pod and claim indexes."""

from __future__ import annotations

from typing import Any

import attrs

from konductor_operator._sessions import DEAD_REMEMBERED, SessionLedger, SlimClaim
from konductor_sdk._kernel.clock import FakeClock
from konductor_sdk._kernel.identity import PodRef
from konductor_sdk._kernel.objects import KObject

NS = "ns"


def session(
    name: str, rv: int, *, ttl: int | None = 10, renew: int = 0, uid: str = "u1", **spec: Any
) -> KObject:
    body: dict[str, Any] = {"renewCount": renew, **spec}
    if ttl is not None:
        body["ttlSeconds"] = ttl
    md = {"name": name, "namespace": NS, "uid": uid, "resourceVersion": str(rv)}
    return KObject({"metadata": md, "spec": body})


def claim(name: str, sess: str, target: str = "s", *, deleting: bool = False) -> SlimClaim:
    return SlimClaim(NS, name, f"uid-{name}", sess, "Semaphore", target, deleting)


def test_the_clock_restarts_only_on_a_renewal_or_a_new_session() -> None:
    clock = FakeClock()
    ledger = SessionLedger(clock)
    key = (NS, "a")
    start = clock.monotonic()
    ledger.observe(session("a", 1))
    assert ledger.expires_at(key) == start + 10
    clock.advance(4)
    ledger.observe(session("a", 2))  # another field changed: same renewCount
    assert ledger.expires_at(key) == start + 10
    assert ledger.judged(key) == ("u1", "2")
    ledger.observe(session("a", 3, ttl=20))  # a longer TTL, same renewal
    assert ledger.expires_at(key) == start + 20
    ledger.observe(session("a", 4, ttl=20, renew=1))
    assert ledger.expires_at(key) == start + 4 + 20
    clock.advance(1)
    ledger.observe(session("a", 5, ttl=20, renew=1, uid="u2"))  # deleted and re-created
    assert ledger.expires_at(key) == start + 5 + 20
    assert not ledger.expired(key)
    clock.advance(20)
    assert ledger.expired(key)


def test_a_session_without_a_ttl_never_expires_and_gets_a_fresh_clock_with_one() -> None:
    clock = FakeClock()
    ledger = SessionLedger(clock)
    key = (NS, "a")
    ledger.observe(session("a", 1, ttl=None))
    assert ledger.expires_at(key) is None
    clock.advance(100)
    assert not ledger.expired(key)
    ledger.observe(session("a", 2, ttl=10))  # same renewCount: the clock starts now
    assert ledger.expires_at(key) == clock.monotonic() + 10


def test_sessions_are_found_by_their_pod_until_it_changes_or_they_end() -> None:
    ledger = SessionLedger(FakeClock())
    pod = {"name": "p", "uid": "pu"}
    ledger.observe(session("a", 1, pod=pod))
    ledger.observe(session("b", 2, pod={**pod, "namespace": NS}))
    ledger.observe(session("c", 3))
    assert sorted(ledger.sessions_of_pod(NS, "p")) == [(NS, "a"), (NS, "b")]
    assert ledger.pod((NS, "a")) == PodRef("p", NS, "pu")
    ledger.observe(session("b", 4, pod={"name": "q"}))
    assert ledger.sessions_of_pod(NS, "p") == [(NS, "a")]
    assert ledger.sessions_of_pod(NS, "q") == [(NS, "b")]
    ledger.ended((NS, "a"))
    assert ledger.sessions_of_pod(NS, "p") == []
    assert ledger.pod((NS, "a")) is None


def test_ended_sessions_are_remembered_for_a_while_then_forgotten_oldest_first() -> None:
    clock = FakeClock()
    ledger = SessionLedger(clock)
    ledger.observe(session("a", 1))
    ledger.ended((NS, "a"))
    assert ledger.is_dead((NS, "a"))
    assert not ledger.known((NS, "a"))
    assert ledger.expires_at((NS, "a")) is None
    clock.advance(DEAD_REMEMBERED / 2)
    ledger.ended((NS, "b"))
    ledger.ended((NS, "a"))  # told again: remembered from now
    clock.advance(DEAD_REMEMBERED / 2 + 1)
    ledger.ended((NS, "c"))
    assert [ledger.is_dead((NS, k)) for k in "abc"] == [True, True, True]
    clock.advance(DEAD_REMEMBERED / 2)
    ledger.ended((NS, "d"))
    assert [ledger.is_dead((NS, k)) for k in "abcd"] == [False, False, True, True]
    ledger.observe(session("c", 9))  # back (a lagging watch): alive after all
    assert not ledger.is_dead((NS, "c"))
    assert ledger.known((NS, "c"))


def test_claims_are_indexed_by_session_and_target_and_forgotten_by_name() -> None:
    ledger = SessionLedger(FakeClock())
    target = ("Semaphore", NS, "s")
    assert ledger.observe_claim(claim("c1", "a")) == [target]
    assert ledger.observe_claim(claim("c1", "a")) == []  # the same again: no change
    assert ledger.observe_claim(claim("c2", "a")) == [target]
    assert ledger.observe_claim(claim("c3", "b", "t")) == [("Semaphore", NS, "t")]
    assert [c.name for c in ledger.claims_of((NS, "a"))] == ["c1", "c2"]
    assert set(ledger.claims_on(target)) == {"c1", "c2"}
    assert sorted(ledger.claim_sessions()) == [(NS, "a"), (NS, "b")]
    # Marked for deletion: no longer waiting, still the session's until it is gone.
    assert ledger.observe_claim(claim("c2", "a", deleting=True)) == [target]
    assert set(ledger.claims_on(target)) == {"c1"}
    assert [c.name for c in ledger.claims_of((NS, "a"))] == ["c1", "c2"]
    assert ledger.forget_claim(NS, "c2") == []  # gone, but it was not waiting any more
    assert ledger.forget_claim(NS, "c1") == [target]
    assert ledger.forget_claim(NS, "c1") == []
    assert ledger.claims_of((NS, "a")) == []
    assert set(ledger.claims_on(target)) == set()
    assert list(ledger.claim_sessions()) == [(NS, "b")]


def test_a_claim_seen_with_another_session_or_target_leaves_the_old_ones() -> None:
    ledger = SessionLedger(FakeClock())
    ledger.observe_claim(claim("c1", "a", "s"))
    changed = ledger.observe_claim(claim("c1", "b", "t"))
    assert sorted(changed) == [("Semaphore", NS, "s"), ("Semaphore", NS, "t")]
    assert ledger.claims_of((NS, "a")) == []
    assert [c.session for c in ledger.claims_of((NS, "b"))] == ["b"]
    assert set(ledger.claims_on(("Semaphore", NS, "s"))) == set()


def test_the_ledger_tells_the_watches_the_versions_it_recorded() -> None:
    ledger = SessionLedger(FakeClock())
    ledger.observe(session("a", 7))
    assert ledger.version(NS, "a") == "7"
    assert ledger.version(NS, "b") is None
    ledger.ended((NS, "a"))
    assert ledger.version(NS, "a") is None
    versions = ledger.claim_versions
    ledger.observe_claim(attrs.evolve(claim("c1", "a"), resource_version="12"))
    ledger.observe_claim(SlimClaim("other", "c2", "u", "a", "Semaphore", "s", False, "13"))
    assert versions.version(NS, "c1") == "12"
    assert sorted(versions.keys()) == [(NS, "c1"), ("other", "c2")]
    ledger.forget_claim(NS, "c1")
    assert versions.version(NS, "c1") is None
    assert list(versions.keys()) == [("other", "c2")]

"""client-go's leader-election record on coordination.k8s.io/v1 Lease, without a server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from konductor_sdk._engines.coordination import (
    Record,
    RecordObserver,
    acquired,
    holds,
    leader_of,
    released,
    renewed,
    should_yield,
)
from konductor_sdk._kernel.clock import FakeClock, rfc3339
from konductor_sdk._kernel.entries import ExpiryTracker
from konductor_sdk._kernel.objects import KObject

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "client_go_lease.json"
# metav1.MicroTime's wire format: RFC 3339 with exactly six fractional digits, UTC.
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
NOW = "2026-11-27T09:00:00.000001Z"


@pytest.fixture
def go_record() -> Record:
    return Record.from_spec(json.loads(FIXTURE.read_text())["spec"])


def test_fixture_is_parsed_like_client_go(go_record: Record) -> None:
    assert go_record.holder_identity.startswith("example-controller-")
    assert go_record.lease_duration_seconds == 15
    assert go_record.lease_transitions == 3
    assert go_record.acquire_time == "2026-11-27T08:31:40.118392Z"
    assert go_record.renew_time == "2026-11-27T08:50:02.904117Z"
    assert go_record.to_spec() == json.loads(FIXTURE.read_text())["spec"]
    assert leader_of(KObject(json.loads(FIXTURE.read_text()))) == go_record.holder_identity


def test_our_timestamps_are_microtime() -> None:
    assert MICROTIME.match(rfc3339(FakeClock().now()))
    assert MICROTIME.match(NOW)


def test_taking_over_increments_transitions_and_resets_times(go_record: Record) -> None:
    mine = acquired(go_record, identity="py-1", duration=10, now=NOW)
    assert mine.to_spec() == {
        "holderIdentity": "py-1",
        "leaseDurationSeconds": 10,
        "acquireTime": NOW,
        "renewTime": NOW,
        "leaseTransitions": 4,
    }
    assert acquired(None, identity="py-1", duration=10, now=NOW).lease_transitions == 0
    assert holds(mine, identity="py-1", token=4)
    assert not holds(go_record, identity="py-1", token=4)


def test_renewal_changes_only_renew_time(go_record: Record) -> None:
    mine = acquired(go_record, identity="py-1", duration=10, now=NOW)
    later = "2026-11-27T09:00:02.500000Z"
    again = renewed(mine, identity="py-1", duration=10, now=later)
    assert again.to_spec() == {**mine.to_spec(), "renewTime": later}


def test_release_is_client_gos_empty_record(go_record: Record) -> None:
    gone = released(go_record, now=NOW)
    assert gone.to_spec() == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": NOW,
        "renewTime": NOW,
        "leaseTransitions": 3,
    }
    assert leader_of(KObject({"spec": gone.to_spec()})) is None


def test_coordinated_fields_survive_and_signal_a_handoff() -> None:
    spec = {
        "holderIdentity": "a",
        "leaseDurationSeconds": 5,
        "leaseTransitions": 1,
        "strategy": "OldestEmulationVersion",
        "preferredHolder": "b",
    }
    record = Record.from_spec(spec)
    assert record.to_spec() == spec
    assert should_yield(record, identity="a") == "b"
    assert should_yield(record, identity="b") is None
    assert renewed(record, identity="a", duration=5, now=NOW).strategy == spec["strategy"]


def test_expiry_is_judged_on_the_observers_clock_since_the_record_changed(
    go_record: Record,
) -> None:
    clock = FakeClock()
    observer = RecordObserver(ExpiryTracker(clock))
    observer.observe(go_record)
    # renewTime is long in the past on any wall clock; it does not matter.
    assert observer.blocked_by(go_record) == f"held by {go_record.holder_identity}"
    clock.advance(14.75)
    observer.observe(go_record)
    assert observer.blocked_by(go_record) is not None
    renewal = renewed(go_record, identity=go_record.holder_identity, duration=15, now=NOW)
    observer.observe(renewal)  # a change restarts the clock
    clock.advance(14.75)
    assert observer.blocked_by(renewal) is not None
    clock.advance(0.25)
    assert observer.blocked_by(renewal) is None
    assert observer.expires_at() == pytest.approx(clock.monotonic())


def test_a_released_record_is_free_at_once(go_record: Record) -> None:
    observer = RecordObserver(ExpiryTracker(FakeClock()))
    gone = released(go_record, now=NOW)
    observer.observe(gone)
    assert observer.blocked_by(gone) is None


def test_wall_clock_skew_does_not_matter(go_record: Record) -> None:
    skewed = FakeClock(skew=-86_400.0)
    observer = RecordObserver(ExpiryTracker(skewed))
    observer.observe(go_record)
    assert observer.blocked_by(go_record) is not None
    skewed.skew = +86_400.0
    assert observer.blocked_by(go_record) is not None

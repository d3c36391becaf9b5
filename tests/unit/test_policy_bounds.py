"""The admission policy's bound on one write and the SDK's agree: the SDK never writes
more new grants at once than a user's write may add."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from konductor_sdk._engines.semaphore_grants import MAX_NEW_PER_WRITE

POLICY = Path(__file__).resolve().parents[2] / "policies" / "semaphore.yaml"


def test_the_grants_policy_bounds_a_users_write_at_the_sdks_batch_size() -> None:
    (policy,) = (
        doc
        for doc in yaml.safe_load_all(POLICY.read_text())
        if doc and doc["kind"] == "ValidatingAdmissionPolicy"
    )
    bounds = {
        int(m.group(1))
        for rule in policy["spec"]["validations"]
        for m in re.finditer(r"variables\.added\.size\(\) <= (\d+)", rule["expression"])
    }
    assert bounds == {MAX_NEW_PER_WRITE}

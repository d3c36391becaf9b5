from pathlib import Path

import pytest

from konductor_sdk._kernel import identity as _identity
from konductor_sdk._kernel.identity import Identity, PodRef, detect


def test_downward_api_env_gives_pod_identity() -> None:
    ident = detect({"POD_NAME": "trainer-0", "POD_NAMESPACE": "ml", "POD_UID": "u-1"})
    assert ident.holder == "trainer-0:u-1"
    assert ident.pod == PodRef("trainer-0", "ml", "u-1")
    assert ident.entry_fields() == {
        "holder": "trainer-0:u-1",
        "pod": {"name": "trainer-0", "namespace": "ml", "uid": "u-1"},
    }


def test_in_pod_without_downward_api_uses_hostname_and_sa_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns_file = tmp_path / "namespace"
    ns_file.write_text("batch\n")
    monkeypatch.setattr(_identity, "SERVICE_ACCOUNT_NAMESPACE_FILE", ns_file)
    ident = detect({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "job-x-abcde"})
    assert ident.pod == PodRef("job-x-abcde", "batch", "")
    assert ident.holder == "job-x-abcde"


def test_outside_a_pod_holder_is_host_pid_random(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_identity, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "missing")
    a, b = detect({}), detect({})
    assert a.pod is None
    assert a.holder.count(":") == 2
    assert a.holder != b.holder  # random part: two clients in one process differ


def test_override_keeps_pod_reference() -> None:
    env = {"POD_NAME": "p", "POD_NAMESPACE": "n", "KONDUCTOR_HOLDER_ID": "custom"}
    ident = detect(env)
    assert ident.holder == "custom"
    assert ident.pod == PodRef("p", "n")


def test_new_keys_are_unique_and_name_the_holder() -> None:
    ident = Identity(holder="h")
    keys = {ident.new_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(k.startswith("h#") for k in keys)


def test_podref_round_trip() -> None:
    ref = PodRef("a", "b", "c")
    assert PodRef.from_dict(ref.to_dict()) == ref
    assert PodRef.from_dict({}) is None

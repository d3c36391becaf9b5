"""Kubeconfigs, CRD loading and the cluster handle: the offline parts of the control plane."""

from __future__ import annotations

import base64
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from konductor_sdk.testing import ClusterHandle
from konductor_sdk.testing._certs import CertificateAuthority
from konductor_sdk.testing._crds import default_crd_dirs, load_crds
from konductor_sdk.testing._kubeconfig import CONTEXT_NAME, read_kubeconfig, write_kubeconfig

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %s}
spec: {group: example.com, names: {plural: x, kind: X}, scope: Namespaced, versions: []}
"""


def test_written_kubeconfig_is_private_and_complete(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "sub" / "kc.yaml",
        server="https://127.0.0.1:6443",
        ca_pem=b"CA",
        user="alice",
        cert_pem=b"CERT",
        key_pem=b"KEY",
        namespace="ns1",
    )
    assert path.stat().st_mode & 0o077 == 0
    document = yaml.safe_load(path.read_text())
    assert document["current-context"] == CONTEXT_NAME
    assert document["contexts"][0]["context"] == {
        "cluster": CONTEXT_NAME,
        "user": "alice",
        "namespace": "ns1",
    }
    user = document["users"][0]["user"]
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    access = read_kubeconfig(path)
    assert (access.server, access.namespace) == ("https://127.0.0.1:6443", "ns1")
    assert (access.ca_pem, access.cert_pem, access.key_pem) == (b"CA", b"CERT", b"KEY")
    assert [p.name for p in path.parent.iterdir()] == ["kc.yaml"]  # no temporary left


def test_read_kubeconfig_resolves_files_relative_to_it_and_tokens(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"FILE-CA")
    (tmp_path / "token").write_text("s3cret\n")
    config = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [
            {"name": "k", "cluster": {"server": "https://h/", "certificate-authority": "ca.pem"}}
        ],
        "users": [{"name": "u", "user": {"tokenFile": "token"}}],
    }
    (tmp_path / "kc").write_text(yaml.safe_dump(config))
    access = read_kubeconfig(tmp_path / "kc")
    assert (access.server, access.namespace, access.token) == ("https://h", "default", "s3cret")
    assert access.ca_pem == b"FILE-CA"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "current-context is not set"),
        (
            {"current-context": "c", "contexts": [], "clusters": [], "users": []},
            "no context named 'c'",
        ),
        (
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": "https://h"}}],
                "users": [{"name": "u", "user": {"exec": {"command": "aws"}}}],
            },
            "no client certificate or token",
        ),
    ],
)
def test_unusable_kubeconfigs_are_rejected(
    tmp_path: Path, config: dict[str, object], message: str
) -> None:
    (tmp_path / "kc").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=message):
        read_kubeconfig(tmp_path / "kc")


def test_handle_mints_kubeconfigs_with_the_shared_ca(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = CertificateAuthority.generate()
    ca.write(pki / "ca.crt", pki / "ca.key")
    handle = ClusterHandle(tmp_path / "admin.yaml", "https://127.0.0.1:1", pki_dir=pki)
    assert ClusterHandle.from_dict(handle.to_dict()) == handle  # what xdist workers receive

    path = handle.mint_kubeconfig("system:serviceaccount:ns:x", ["g1", "g2"], namespace="ns")
    assert path.parent == tmp_path / "kubeconfigs"
    access = read_kubeconfig(path)
    assert access.namespace == "ns"
    assert access.ca_pem == ca.cert_pem
    assert access.cert_pem is not None
    cert = x509.load_pem_x509_certificate(access.cert_pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert (cn, groups) == ("system:serviceaccount:ns:x", ["g1", "g2"])
    assert handle.mint_kubeconfig("system:serviceaccount:ns:x") != path  # never overwritten


def test_existing_cluster_handle_cannot_mint(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc", server="https://h:1", ca_pem=b"", user="u", cert_pem=b"C", key_pem=b"K"
    )
    handle = ClusterHandle.from_kubeconfig(path)
    assert handle.server == "https://h:1"
    assert not handle.can_mint
    assert ClusterHandle.from_dict(handle.to_dict()) == handle
    with pytest.raises(NotImplementedError, match="CA key is unknown"):
        handle.mint_kubeconfig("alice")


def test_load_crds_reads_multi_document_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(CRD % "b.example.com")
    (tmp_path / "a.yml").write_text("---\n" + CRD % "a1.example.com" + "---\n" + CRD % "a2")
    (tmp_path / "notes.txt").write_text("not yaml: [")
    names = [crd["metadata"]["name"] for crd in load_crds([tmp_path, tmp_path / "missing"])]
    assert names == ["a1.example.com", "a2", "b.example.com"]


def test_load_crds_refuses_other_kinds(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: x}
            """
        )
    )
    with pytest.raises(ValueError, match="expected kind CustomResourceDefinition, got ConfigMap"):
        load_crds([tmp_path])


def test_default_crd_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KONDUCTOR_CRDS_DIR", raising=False)
    (default,) = default_crd_dirs()
    assert default.parts[-2:] == ("konductor_sdk", "crds")
    monkeypatch.setenv("KONDUCTOR_CRDS_DIR", os.pathsep.join(["/a", "/b"]))
    assert default_crd_dirs() == [Path("/a"), Path("/b")]

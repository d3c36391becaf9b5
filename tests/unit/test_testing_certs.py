"""The in-process PKI issues what a kube-apiserver expects: a CA, a serving cert valid for
every name the apiserver is dialled by, and client certs whose CN/O are user and groups."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from konductor_sdk.testing._certs import (
    SERVING_DNS_NAMES,
    CertificateAuthority,
    generate_service_account_key,
)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_ca_is_a_self_signed_ca(ca: CertificateAuthority) -> None:
    cert = _cert(ca.cert_pem)
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


@pytest.mark.parametrize(
    "name",
    [x509.DNSName(n) for n in SERVING_DNS_NAMES]
    + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
)
def test_serving_cert_verifies_for_every_apiserver_name(
    ca: CertificateAuthority, name: x509.DNSName | x509.IPAddress
) -> None:
    leaf = _cert(ca.issue_serving_cert().cert_pem)
    verifier = PolicyBuilder().store(Store([_cert(ca.cert_pem)])).build_server_verifier(name)
    chain = verifier.verify(leaf, [])
    assert chain[0] == leaf
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_serving_cert_does_not_verify_for_other_names(ca: CertificateAuthority) -> None:
    leaf = _cert(ca.issue_serving_cert().cert_pem)
    store = Store([_cert(ca.cert_pem)])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.com"))
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(leaf, [])


def test_client_cert_carries_user_and_groups(ca: CertificateAuthority) -> None:
    pair = ca.issue_client_cert("alice", ["team-a", "system:masters"])
    leaf = _cert(pair.cert_pem)
    assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["alice"]
    organizations = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in organizations] == ["team-a", "system:masters"]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # The WebPKI client profile insists on a SAN that Kubernetes client certs do not need,
    # so check the signature directly.
    leaf.verify_directly_issued_by(_cert(ca.cert_pem))


def test_client_key_matches_its_certificate(ca: CertificateAuthority) -> None:
    pair = ca.issue_client_cert("bob")
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = _cert(pair.cert_pem).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))  # raises if mismatched


def test_empty_user_is_rejected(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="user must be a non-empty string"):
        ca.issue_client_cert("")


def test_ca_roundtrips_through_files_with_a_private_key_file(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    ca.write(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
    loaded = CertificateAuthority.load(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert loaded.cert_pem == ca.cert_pem
    # A cert issued by the reloaded CA (as an xdist worker does) chains to the original.
    leaf = _cert(loaded.issue_client_cert("carol").cert_pem)
    leaf.verify_directly_issued_by(_cert(ca.cert_pem))


def test_service_account_key_pair_matches() -> None:
    signing = generate_service_account_key()
    private = serialization.load_pem_private_key(signing.private_pem, password=None)
    public = serialization.load_pem_public_key(signing.public_pem)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]

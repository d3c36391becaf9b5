"""In-process PKI for the local control plane (``cryptography``, no ``openssl`` shell-outs).

One CA signs everything: the apiserver's serving certificate and every client certificate.
The apiserver trusts it as ``--client-ca-file``, so a client certificate's CN is the user
name and its O entries are the groups, which is exactly how ``mint_client_cert`` creates
users with arbitrary RBAC identities. ECDSA P-256 keys keep generation in the
sub-millisecond range, so a fresh PKI per control plane costs nothing measurable.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Self, final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "KeyPair",
    "SigningKey",
    "generate_service_account_key",
]

# The names a pod would use to reach the apiserver, plus the first IP of the default
# --service-cluster-ip-range (10.0.0.0/24), so the serving cert is valid however it is dialled.
SERVING_DNS_NAMES: Final = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS: Final = ("127.0.0.1", "10.0.0.1")

# Backdate certificates so a clock a little behind ours (a VM, a container) still accepts them.
_BACKDATE: Final = datetime.timedelta(hours=1)
_VALIDITY: Final = datetime.timedelta(days=365)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


@final
@attrs.frozen
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both files, the key readable by the owner only.

        Args:
            cert_path: Destination of the certificate.
            key_path: Destination of the private key (created with mode 0600).
        """
        cert_path.write_bytes(self.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(self.key_pem)


@final
class CertificateAuthority:
    """A self-signed CA that issues serving and client certificates.

    Create one with :meth:`generate`, persist it with :meth:`write` and load it in another
    process (a pytest-xdist worker) with :meth:`load`.
    """

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        """Wrap an existing CA certificate and its key (see :meth:`generate`, :meth:`load`).

        Args:
            certificate: The CA certificate.
            key: Its private key.
        """
        self._certificate = certificate
        self._key = key

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self._certificate.subject.rfc4514_string()}>"

    @classmethod
    def generate(cls, common_name: str = "konductor-local-ca") -> Self:
        """Create a new CA with a fresh key.

        Args:
            common_name: The CA's subject CN.

        Returns:
            The new CA.
        """
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        name = _name(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Self:
        """Load a CA previously saved with :meth:`write`.

        Args:
            cert_path: The PEM certificate.
            key_path: The PEM private key.

        Returns:
            The CA.

        Raises:
            TypeError: The key is not an ECDSA key.
        """
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_path} must hold an ECDSA key, got {type(key).__name__}")
        return cls(certificate, key)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM-encoded (what clients and the apiserver trust)."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Persist the CA certificate and key.

        Args:
            cert_path: Destination of the certificate.
            key_path: Destination of the private key (mode 0600).
        """
        KeyPair(self.cert_pem, _key_pem(self._key)).write(cert_path, key_path)

    def _issue(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName | None = None,
    ) -> KeyPair:
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_serving_cert(
        self,
        *,
        dns_names: Sequence[str] = SERVING_DNS_NAMES,
        ip_addresses: Sequence[str] = SERVING_IPS,
    ) -> KeyPair:
        """Issue a TLS server certificate for the apiserver.

        Args:
            dns_names: DNS subject alternative names.
            ip_addresses: IP subject alternative names.

        Returns:
            The certificate and key.
        """
        san = x509.SubjectAlternativeName(
            [x509.DNSName(name) for name in dns_names]
            + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        )
        return self._issue(_name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, san)

    def issue_client_cert(self, user: str, groups: Sequence[str] = ()) -> KeyPair:
        """Issue a client certificate the apiserver maps to ``user`` in ``groups``.

        Args:
            user: The Kubernetes user name (certificate CN).
            groups: The user's groups (certificate O entries), e.g. ``["system:masters"]``.

        Returns:
            The certificate and key.

        Raises:
            ValueError: ``user`` is empty.
        """
        if not user:
            raise ValueError("user must be a non-empty string, got ''")
        return self._issue(_name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH)


@final
@attrs.frozen
class SigningKey:
    """A bare key pair (no certificate): the service-account token signing key."""

    private_pem: bytes
    public_pem: bytes


def generate_service_account_key() -> SigningKey:
    """Create the key pair the apiserver signs and verifies service-account tokens with.

    Returns:
        The private key (``--service-account-signing-key-file``) and its public key
        (``--service-account-key-file``), both PEM.
    """
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(private_pem=_key_pem(key), public_pem=public)

"""Certificates made in the test, with ``cryptography``: a CA, server and client certificates.

One module for every TLS test (``tests/integration/test_tls.py``, ``test_credentials.py`` and
``tests/triton/test_gateway_tls.py``); it imports no driftgate protobuf module, so the
tritonclient tests may use it. Keys are ECDSA P-256: quick to make, and understood by gRPC
(BoringSSL), Python's ``ssl`` and tritonclient.

    ca = Authority.create(tmp_path / "ca", "driftgate test CA")
    server = ca.issue(tmp_path / "server", "gateway-1", hosts=LOOPBACK)
    client = ca.issue(tmp_path / "client", "operator-1")
    # ca.cert_path, server.cert_path / server.key_path, client.cert_path / client.key_path
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LOOPBACK", "Authority", "Issued"]

#: the names a server on this machine is reached by: its certificate's subject alternative names
LOOPBACK = ("127.0.0.1", "localhost")

_VALIDITY = dt.timedelta(days=2)
_BACKDATE = dt.timedelta(hours=1)  # tolerate a clock a little behind


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "driftgate tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, written as PEM files."""

    certificate: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def der(self) -> bytes:
        """The certificate as a TLS peer sends it (``ssl.SSLSocket.getpeercert(True)``)."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def common_name(self) -> str:
        value = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return str(value)

    @property
    def serial(self) -> int:
        return self.certificate.serial_number


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its certificate (``cert_path``) is what peers trust."""

    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    cert_path: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / "ca.crt"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(name, key, certificate, cert_path)

    def issue(
        self,
        directory: Path,
        common_name: str,
        *,
        hosts: tuple[str, ...] = (),
        cert_name: str = "tls.crt",
        key_name: str = "tls.key",
    ) -> Issued:
        """A leaf certificate for ``common_name``, valid for TLS servers and clients alike;
        ``hosts`` (IP addresses or DNS names) become its subject alternative names, which a
        client checks against the address it dialled."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
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
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / cert_name, directory / key_name
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return Issued(certificate, cert_path, key_path)


@dataclass(frozen=True)
class Pki:
    """A CA with a server and two clients, and an untrusted CA with an impostor."""

    ca: Authority
    server: Issued  # SANs 127.0.0.1 and localhost
    operator: Issued  # CN operator-1
    reporter: Issued  # CN reporter-1
    untrusted_ca: Authority
    impostor: Issued  # CN operator-1 too, but signed by the untrusted CA

    @classmethod
    def create(cls, root: Path) -> Pki:
        ca = Authority.create(root / "ca", "driftgate test CA")
        untrusted = Authority.create(root / "untrusted-ca", "someone else's CA")
        return cls(
            ca=ca,
            server=ca.issue(root / "server", "gateway-1", hosts=LOOPBACK),
            operator=ca.issue(root / "operator", "operator-1"),
            reporter=ca.issue(root / "reporter", "reporter-1"),
            untrusted_ca=untrusted,
            impostor=untrusted.issue(root / "impostor", "operator-1"),
        )

"""Client-facing TLS material.

When the config names no certificate, the gateway generates a private CA and
a server certificate signed by it into ``data_dir/tls`` on first start and
reuses them afterwards, so clients can pin the CA (``sslmode=verify-full``,
a kubeconfig's ``certificate-authority-data``) across restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "hoopd gateway CA"


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    cert: Path
    key: Path
    ca: Path | None
    """The CA that signed ``cert`` when hoopd generated it (clients trust this)."""

    def server_context(self, client_ca: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san_entries(hostnames: tuple[str, ...]) -> list[x509.GeneralName]:
    names = {"localhost", socket.gethostname(), "127.0.0.1", "::1", *hostnames}
    out: list[x509.GeneralName] = []
    for name in sorted(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def generate_ca(common_name: str = CA_NAME, days: int = 3650) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    hostnames: tuple[str, ...] = (),
    client: bool = False,
    organizational_units: tuple[str, ...] = (),
    days: int = 825,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate: a server certificate with SANs, or (client=True) a
    client certificate whose OUs name its groups."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou) for ou in organizational_units]
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if not client:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_san_entries(hostnames)), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_tls_material(
    data_dir: Path,
    cert: Path | None = None,
    key: Path | None = None,
    hostnames: tuple[str, ...] = (),
) -> TlsMaterial:
    if cert is not None and key is not None:
        return TlsMaterial(cert=cert, key=key, ca=None)
    tls_dir = data_dir / "tls"
    ca_path, ca_key_path = tls_dir / "ca.pem", tls_dir / "ca-key.pem"
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server-key.pem"
    if not (ca_path.exists() and ca_key_path.exists()):
        ca_cert, ca_key = generate_ca()
        _write_private(ca_key_path, _key_pem(ca_key))
        ca_path.write_bytes(cert_pem(ca_cert))
    if not (cert_path.exists() and key_path.exists()):
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        leaf, leaf_key = issue_certificate(ca_cert, loaded, "hoopd gateway", hostnames=hostnames)
        _write_private(key_path, _key_pem(leaf_key))
        cert_path.write_bytes(cert_pem(leaf))
    return TlsMaterial(cert=cert_path, key=key_path, ca=ca_path)


def identity_from_peercert(peercert: dict[str, object] | None) -> tuple[str, frozenset[str]] | None:
    """(common name, organizational units as groups) from ``getpeercert()``."""
    if not peercert:
        return None
    cn = ""
    groups: set[str] = set()
    subject = peercert.get("subject", ())
    assert isinstance(subject, tuple)
    for rdn in subject:
        for attr, value in rdn:
            if attr == "commonName":
                cn = value
            elif attr == "organizationalUnitName":
                groups.add(value)
    return (cn, frozenset(groups)) if cn else None

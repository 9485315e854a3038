"""Mint throwaway CAs and server certificates for tests, demos and replay.

Everything here is built with ``cryptography`` and is deliberately small:
a CA (optionally below another CA) and leaves with exactly the names a
scenario needs, including names no sane CA would issue (CN-only,
partial wildcards, an IP written as a DNS name).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certmatch.core import certificates

UTC = dt.UTC


def _now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


@dataclass
class Issued:
    """A certificate, its private key, and the CA certificates above it (nearest first)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    issuers: list[x509.Certificate] = field(default_factory=list)

    @property
    def is_ca(self) -> bool:
        return certificates.is_ca(self.cert)

    def chain(self, *, include_root: bool = False) -> list[x509.Certificate]:
        """Leaf first, then intermediates; the self-signed root only if asked."""
        certs = [self.cert, *self.issuers]
        if not include_root and len(certs) > 1 and _self_signed(certs[-1]):
            certs = certs[:-1]
        return certs

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def chain_pem(self, *, include_root: bool = False) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in self.chain(include_root=include_root)
        )

    def write(self, directory: Path, stem: str) -> dict[str, Path]:
        """Write ``stem.pem``, ``stem.key`` (mode 0600) and ``stem.chain.pem``."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "cert": directory / f"{stem}.pem",
            "key": directory / f"{stem}.key",
            "chain": directory / f"{stem}.chain.pem",
        }
        paths["cert"].write_bytes(self.cert_pem())
        # Created owner-only, never readable by others even for a moment.
        fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(self.key_pem())
        paths["key"].chmod(0o600)  # an existing file keeps its mode through O_CREAT
        paths["chain"].write_bytes(self.chain_pem())
        return paths


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _name(cn: str | None, org: str | None = None) -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_ca(
    name: str,
    *,
    parent: Issued | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    path_length: int | None = None,
    permitted_dns: list[str] | tuple[str, ...] = (),
) -> Issued:
    """A CA certificate: self-signed when ``parent`` is None, else an intermediate.

    ``path_length`` sets its pathLenConstraint (none by default); ``permitted_dns`` gives it
    critical name constraints that permit only those DNS subtrees (none by default).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    subject = _name(name, "certmatch test PKI")
    issuer_name = parent.cert.subject if parent else subject
    signing_key = parent.key if parent else key
    builder = ca_certificate_builder(
        subject,
        issuer_name,
        key.public_key(),
        parent.key.public_key() if parent else None,
        not_before or now - dt.timedelta(days=1),
        not_after or now + dt.timedelta(days=3650),
        path_length=path_length,
        name_constraints=(
            x509.NameConstraints([x509.DNSName(d) for d in permitted_dns], None)
            if permitted_dns
            else None
        ),
    )
    cert = builder.sign(signing_key, hashes.SHA256())
    issuers = [parent.cert, *parent.issuers] if parent else []
    return Issued(cert, key, issuers)


def ca_certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer_public_key: CertificatePublicKeyTypes | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    path_length: int | None = None,
    name_constraints: x509.NameConstraints | None = None,
) -> x509.CertificateBuilder:
    """A CA certificate's builder (basic constraints, key usage, key identifiers), ready to sign.

    ``issuer_public_key`` is None for a self-signed root. ``path_length`` is the
    pathLenConstraint; ``name_constraints``, when given, is added as a critical extension.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_public_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key),  # type: ignore[arg-type]
            critical=False,
        )
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    return builder


def issue_leaf(
    ca: Issued | None,
    *,
    cn: str | None = None,
    dns: list[str] | tuple[str, ...] = (),
    ips: list[str] | tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extended_key_usage: list[x509.ObjectIdentifier] | tuple[x509.ObjectIdentifier, ...] = (
        ExtendedKeyUsageOID.SERVER_AUTH,
    ),
    rsa_bits: int | None = None,
) -> Issued:
    """A server certificate signed by ``ca``, or self-signed when ``ca`` is None.

    ``dns`` and ``ips`` become the subjectAltName; with neither, the
    certificate has no SAN extension at all (a CN-only certificate).
    ``extended_key_usage`` lists its purposes (serverAuth by default). The key is EC P-256,
    or RSA of ``rsa_bits`` (a server may keep one of each and choose by the client's
    signature algorithms).
    """
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        if rsa_bits
        else ec.generate_private_key(ec.SECP256R1())
    )
    now = _now()
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        # RFC 5280 §4.2.1.6: with an empty subject the CA must mark the SAN critical.
        critical = len(subject) == 0
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=critical)
    cert = builder.sign(ca.key if ca else key, hashes.SHA256())
    issuers = [ca.cert, *ca.issuers] if ca else []
    return Issued(cert, key, issuers)

"""Parse a recorded certificate chain (base64 DER, leaf first) for display and analysis.

Recordings hold whatever the server sent, so nothing here trusts its input:
bad base64, truncated DER, DER that ``cryptography`` refuses and extensions
that only fail when read (``cryptography`` parses them lazily) all end up as
one-line errors on the certificate concerned, never as exceptions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateSummary:
    """What a person (or a rule) needs to know about one presented certificate."""

    index: int  # position in the presented chain, 0 = leaf
    subject: str  # RFC 4514 string, "" if unparseable
    issuer: str
    not_before: datetime | None  # timezone-aware UTC
    not_after: datetime | None
    serial: str  # uppercase hex
    sha256: str  # uppercase hex with colons, of the DER as presented
    sha1: str
    is_ca: bool
    self_issued: bool  # subject == issuer
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    common_names: tuple[str, ...]
    error: str | None  # one line, set when the certificate or an extension could not be parsed


@dataclass(frozen=True)
class ParsedChain:
    """A presented chain: parsed certificates (None where unparseable) and their summaries."""

    certificates: tuple[x509.Certificate | None, ...]
    summaries: tuple[CertificateSummary, ...]

    @property
    def leaf(self) -> x509.Certificate | None:
        return self.certificates[0] if self.certificates else None

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(s.error for s in self.summaries if s.error)


def certificate_label(index: int) -> str:
    """How errors name a position in the chain: "leaf certificate", "certificate 2"."""
    return "leaf certificate" if index == 0 else f"certificate {index}"


def fingerprint(der: bytes, algorithm: str) -> str:
    """Uppercase hex digest with colons, as browsers and ``openssl -fingerprint`` show it."""
    return hashlib.new(algorithm, der).digest().hex(":").upper()


def decode_der(text: object) -> bytes:
    """Base64 text to DER bytes; raises ValueError (TypeError for non-text) with a short reason."""
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    compact = "".join(text.split())
    if not compact:
        raise ValueError("empty string instead of base64 DER")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from None


def parse_chain(chain_b64: Sequence[str]) -> ParsedChain:
    """Parse every certificate of a recorded chain; never raises."""
    certificates: list[x509.Certificate | None] = []
    summaries: list[CertificateSummary] = []
    for index, text in enumerate(chain_b64):
        cert, summary = _parse_one(index, text)
        certificates.append(cert)
        summaries.append(summary)
    return ParsedChain(tuple(certificates), tuple(summaries))


def to_pem(chain_b64: Sequence[str]) -> str:
    """PEM text of the chain exactly as presented, leaf first.

    DER that cannot be parsed is still exported (it is what the server sent);
    an entry that is not even base64 is replaced by an explanatory line, which
    PEM readers skip (RFC 7468 §5.2).
    """
    parts: list[str] = []
    for index, text in enumerate(chain_b64):
        try:
            der = decode_der(text)
        except (TypeError, ValueError) as exc:
            parts.append(f"{certificate_label(index)} left out: {exc}\n")
            continue
        body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
        parts.append(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    return "".join(parts)


def _empty_summary(index: int, der: bytes, error: str) -> CertificateSummary:
    return CertificateSummary(
        index=index,
        subject="",
        issuer="",
        not_before=None,
        not_after=None,
        serial="",
        sha256=fingerprint(der, "sha256") if der else "",
        sha1=fingerprint(der, "sha1") if der else "",
        is_ca=False,
        self_issued=False,
        dns_names=(),
        ip_addresses=(),
        common_names=(),
        error=error,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = plain_parse_error(text)
    return text if len(text) <= 200 else text[:197] + "..."


# cryptography's parser (rust-asn1) reports in Rust's debug notation, e.g.
# ``error parsing asn1 value: ParseError { kind: ShortData { needed: 411 }, location:
# ["Certificate::tbs_cert", "TbsCertificate::validity"] }``.
_ASN1_ERROR = re.compile(
    r"error parsing asn1 value: ParseError \{ kind: (?P<kind>\w+)(?: \{ (?P<args>.*?) \})?"
    r"(?:, location: \[(?P<location>[^\]]*)\])? \}$"
)
_ASN1_KINDS = {
    "ExtraData": "there are bytes after its end",
    "InvalidValue": "a value is not valid",
    "InvalidTag": "a field's ASN.1 tag is malformed",
    "InvalidLength": "a field's length is malformed",
    "IntegerOverflow": "a number is too large",
    "EncodedDefault": "a field spells out its default value, which DER forbids",
    "InvalidSetOrdering": "a SET's elements are not in DER order",
    "OidTooLong": "an object identifier is too long",
    "UnknownDefinedBy": "a field is of a kind cryptography does not know",
}
# rust-asn1's field names where RFC 5280's ASN.1 module calls them otherwise.
_RFC5280_FIELDS = {
    "tbs_cert": "tbsCertificate",
    "signature_alg": "signatureAlgorithm",
    "spki": "subjectPublicKeyInfo",
    "raw_extensions": "extensions",
    "UtcTime": "UTCTime",
}


def plain_parse_error(text: str) -> str:
    """cryptography's ASN.1 parse error as a plain phrase (``it ends 411 bytes too early, in
    tbsCertificate.version``); any other text as it is."""
    match = _ASN1_ERROR.match(text)
    if match is None:
        return text
    kind, args = match["kind"], match["args"] or ""
    if kind == "ShortData":
        needed = re.search(r"needed: (\d+)", args)
        what = f"it ends {needed[1]} bytes too early" if needed else "it ends too early"
        what += " (cut short)"
    elif kind == "UnexpectedTag":
        tag = re.search(r"value: (\d+)", args)
        what = "a field has an unexpected ASN.1 type" + (f" (tag {tag[1]})" if tag else "")
    else:
        what = _ASN1_KINDS.get(kind) or re.sub(r"(?<!^)(?=[A-Z])", " ", kind).lower()
    if match["location"]:
        fields = [
            _RFC5280_FIELDS.get(name, _camel(name))
            for step in re.findall(r'"([^"]*)"', match["location"])
            for name in [step.rpartition("::")[2]]
        ]
        what += f", in {'.'.join(fields)}"
    return what


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _parse_one(index: int, text: object) -> tuple[x509.Certificate | None, CertificateSummary]:
    label = certificate_label(index)
    try:
        der = decode_der(text)
    except (TypeError, ValueError) as exc:
        return None, _empty_summary(index, b"", f"{label}: {exc}")
    try:
        with warnings.catch_warnings():
            # e.g. a non-positive serial: worth a look, but not worth noise on stderr
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
    except Exception as exc:  # noqa: BLE001 - hostile input; cryptography says ValueError
        return None, _empty_summary(
            index, der, f"{label}: not a certificate cryptography can parse: {_one_line(exc)}"
        )
    return cert, _summarise(index, cert, der)


def _summarise(index: int, cert: x509.Certificate, der: bytes) -> CertificateSummary:
    """Read each field separately, so one bad field does not hide the others."""
    problems: list[str] = []

    def attempt[T](what: str, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - lazily parsed fields raise various errors
            problems.append(f"{what}: {_one_line(exc)}")
            return default

    subject = attempt("subject", lambda: cert.subject.rfc4514_string(), "")
    issuer = attempt("issuer", lambda: cert.issuer.rfc4514_string(), "")
    self_issued = attempt("issuer", lambda: cert.subject == cert.issuer, False)
    not_before = attempt("notBefore", lambda: cert.not_valid_before_utc, None)
    not_after = attempt("notAfter", lambda: cert.not_valid_after_utc, None)
    serial = attempt("serial number", lambda: _hex_serial(_serial_number(cert)), "")
    no_names: tuple[str, ...] = ()
    common_names = attempt("subject", lambda: _common_names(cert), no_names)
    extensions = attempt("extensions", lambda: cert.extensions, None)
    is_ca = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    if extensions is not None:
        is_ca = attempt("basicConstraints", lambda: _is_ca(extensions), False)
        dns_names, ip_addresses = attempt(
            "subjectAltName", lambda: _alt_names(extensions), (no_names, no_names)
        )
    error = None
    if problems:
        # Repeated readers of the same broken field (subject, issuer) say it once.
        unique = list(dict.fromkeys(problems))
        error = f"{certificate_label(index)}: could not parse " + "; ".join(unique)
    return CertificateSummary(
        index=index,
        subject=subject,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        serial=serial,
        sha256=fingerprint(der, "sha256"),
        sha1=fingerprint(der, "sha1"),
        is_ca=is_ca,
        self_issued=self_issued,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        common_names=common_names,
        error=error,
    )


def _serial_number(cert: x509.Certificate) -> int:
    """The serial, without the warning cryptography gives when it is zero or negative (x509-limbo
    rfc5280::serial::zero): the report shows it; stderr need not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return cert.serial_number


def _hex_serial(serial: int) -> str:
    sign = "-" if serial < 0 else ""
    digits = f"{abs(serial):X}"
    return sign + ("0" + digits if len(digits) % 2 else digits)


def _common_names(cert: x509.Certificate) -> tuple[str, ...]:
    values = (a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return tuple(v if isinstance(v, str) else v.decode("utf-8", "replace") for v in values)


def is_ca(cert: x509.Certificate) -> bool:
    """True when the certificate's basicConstraints says CA (absent or unreadable: not a CA)."""
    return _is_ca(cert.extensions) if _extensions_readable(cert) else False


def _extensions_readable(cert: x509.Certificate) -> bool:
    try:
        cert.extensions  # noqa: B018 - cryptography parses extensions lazily and may raise
    except Exception:  # noqa: BLE001 - hostile DER: treat as having no extensions
        return False
    return True


def _is_ca(extensions: x509.Extensions) -> bool:
    try:
        return bool(extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except Exception:  # noqa: BLE001 - absent or unparseable: not a CA
        return False


def _alt_names(extensions: x509.Extensions) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return dns, ips


def subject_label(cert: x509.Certificate) -> str:
    """The subject, or for an empty one the names it carries: "(empty subject; SAN a, b)"."""
    try:
        subject = cert.subject.rfc4514_string()
    except Exception:  # noqa: BLE001 - unparseable
        return "(unparseable subject)"
    if subject:
        return subject
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except Exception:  # noqa: BLE001 - no SAN, or one cryptography cannot read
        names = []
    return f"(empty subject; SAN {', '.join(names)})" if names else "(empty subject)"

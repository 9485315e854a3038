"""What RFC 5280's certificate profile (§4) asks of the CA that issued a certificate.

These rules bind the issuing CA, not path validation (§6.1): OpenSSL's and GnuTLS's default
verifiers, and so the mail clients built on them, accept a chain that breaks them. certmatch
reports a breach as a warning (``ca-profile-violation``) and does not fail the session for it,
so that its verdict agrees with the client's. Stricter verifiers refuse some of them (OpenSSL
with ``X509_V_FLAG_X509_STRICT``, which Python 3.13's default context sets).
"""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID

# At most this many octets in a serial number's DER contents (RFC 5280 §4.1.2.2).
MAX_SERIAL_OCTETS = 20


def profile_breaches(cert: x509.Certificate, *, self_signed: bool) -> list[str]:
    """Each rule of RFC 5280 §4 that ``cert`` breaks, as a clause naming its section.

    ``self_signed``: the certificate is a CA's own self-signed certificate, which may omit
    the authorityKeyIdentifier."""
    try:
        extensions = {e.oid: e for e in cert.extensions}
    except Exception:  # noqa: BLE001 - unparseable extensions are reported as malformed
        return []
    breaches = []
    with warnings.catch_warnings():
        # cryptography warns of a serial that is not positive: that is what is judged here
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        serial = cert.serial_number
    if serial <= 0:
        breaches.append(f"its serial number is {serial}, not a positive integer (§4.1.2.2)")
    elif (serial.bit_length() + 8) // 8 > MAX_SERIAL_OCTETS:  # DER adds a sign octet
        breaches.append(f"its serial number takes more than {MAX_SERIAL_OCTETS} octets (§4.1.2.2)")
    basic = extensions.get(ExtensionOID.BASIC_CONSTRAINTS)
    is_ca = basic is not None and isinstance(basic.value, x509.BasicConstraints) and basic.value.ca
    if is_ca and basic is not None and not basic.critical:
        breaches.append("it is a CA certificate whose basicConstraints is not critical (§4.2.1.9)")
    if not self_signed and ExtensionOID.AUTHORITY_KEY_IDENTIFIER not in extensions:
        breaches.append("it has no authorityKeyIdentifier (§4.2.1.1)")
    if is_ca and ExtensionOID.SUBJECT_KEY_IDENTIFIER not in extensions:
        breaches.append("it is a CA certificate without a subjectKeyIdentifier (§4.2.1.2)")
    usage = extensions.get(ExtensionOID.KEY_USAGE)
    usage_value = usage.value if usage is not None else None
    if isinstance(usage_value, x509.KeyUsage) and usage_value.key_cert_sign and not is_ca:
        breaches.append("its keyUsage has keyCertSign but it is not a CA (§4.2.1.3)")
    constraints = extensions.get(ExtensionOID.NAME_CONSTRAINTS)
    if constraints is not None:
        if not is_ca:
            breaches.append("it carries nameConstraints, which only a CA may (§4.2.1.10)")
        elif not constraints.critical:
            breaches.append("its nameConstraints is not critical (§4.2.1.10)")
    policy = extensions.get(ExtensionOID.POLICY_CONSTRAINTS)
    if policy is not None and not policy.critical:
        breaches.append("its policyConstraints is not critical (§4.2.1.11)")
    names = extensions.get(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if names is not None and not names.critical and _empty_subject(cert):
        breaches.append("its subject is empty and its subjectAltName is not critical (§4.2.1.6)")
    return breaches


def _empty_subject(cert: x509.Certificate) -> bool:
    try:
        return len(cert.subject) == 0
    except Exception:  # noqa: BLE001 - an unparseable subject is reported as malformed
        return False

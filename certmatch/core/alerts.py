"""TLS alerts: their names, numbers and meanings, and which of them refuse a certificate.

The names and numbers are those of RFC 8446 §6 (TLS 1.3) and RFC 5246 §7.2 (TLS 1.2,
which also has decompression_failure and no_renegotiation); each meaning paraphrases the
alert's definition in RFC 8446 §6.1 and §6.2, or RFC 5246 §7.2.2 for the TLS 1.2-only
ones. A client that sends one of :data:`CERTIFICATE_ALERTS` says it refused the
certificate; any other alert ends the handshake for another reason.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alert:
    """One alert description: ``unknown_ca`` (48) and what it means."""

    code: int
    name: str
    meaning: str  # what the sender says by it, as a clause: "the CA ... could not be located"


ALERTS: tuple[Alert, ...] = (
    Alert(0, "close_notify", "it will send nothing more on this connection"),
    Alert(10, "unexpected_message", "it received a message it did not expect"),
    Alert(20, "bad_record_mac", "a record could not be deprotected"),
    Alert(22, "record_overflow", "a record was longer than allowed"),
    Alert(30, "decompression_failure", "the decompression function received improper input"),
    Alert(
        40,
        "handshake_failure",
        "it was unable to negotiate an acceptable set of security parameters",
    ),
    Alert(
        42,
        "bad_certificate",
        "a certificate was corrupt, its signatures did not verify, or the like (OpenSSL-based "
        "clients also send it for a name that does not match)",
    ),
    Alert(43, "unsupported_certificate", "a certificate was of an unsupported type"),
    Alert(44, "certificate_revoked", "a certificate was revoked by its signer"),
    Alert(45, "certificate_expired", "a certificate has expired or is not currently valid"),
    Alert(
        46,
        "certificate_unknown",
        "some other issue arose in processing the certificate, rendering it unacceptable",
    ),
    Alert(47, "illegal_parameter", "a field in the handshake was incorrect or inconsistent"),
    Alert(
        48,
        "unknown_ca",
        "the CA certificate could not be located or could not be matched with a known trust anchor",
    ),
    Alert(
        49,
        "access_denied",
        "a valid certificate was received, but access control made it decide not to proceed",
    ),
    Alert(50, "decode_error", "a message could not be decoded"),
    Alert(
        51,
        "decrypt_error",
        "a handshake cryptographic operation failed, such as verifying a signature",
    ),
    Alert(70, "protocol_version", "it does not support the protocol version offered"),
    Alert(71, "insufficient_security", "it requires more secure parameters than were offered"),
    Alert(
        80,
        "internal_error",
        "an internal error unrelated to the peer made it stop (OpenSSL-based clients also send "
        "it when the application's own check of the certificate refuses it, such as a pinned "
        "fingerprint)",
    ),
    Alert(86, "inappropriate_fallback", "a connection retry was invalid"),
    Alert(
        90, "user_canceled", "the handshake was cancelled for a reason unrelated to the protocol"
    ),
    Alert(100, "no_renegotiation", "it will not renegotiate"),
    Alert(109, "missing_extension", "a mandatory extension was missing"),
    Alert(110, "unsupported_extension", "a message carried an extension it may not carry"),
    Alert(112, "unrecognized_name", "no server is known by the name the client sent"),
    Alert(
        113,
        "bad_certificate_status_response",
        "the server's OCSP response was invalid or unacceptable",
    ),
    Alert(115, "unknown_psk_identity", "no acceptable PSK identity was offered"),
    Alert(116, "certificate_required", "a client certificate was required but none was sent"),
    Alert(120, "no_application_protocol", "none of the offered ALPN protocols is supported"),
)

BY_NAME: dict[str, Alert] = {alert.name: alert for alert in ALERTS}
BY_CODE: dict[int, Alert] = {alert.code: alert for alert in ALERTS}

# The alerts by which a client refuses the server's certificate: the certificate alerts of
# RFC 8446 §6.2, handshake_failure (what older stacks send for any refusal), user_canceled (a
# person declined at the client's certificate dialogue), and internal_error (what OpenSSL
# sends when an application's own verify callback refuses, e.g. fetchmail's sslfingerprint).
CERTIFICATE_ALERTS = frozenset(
    {
        "handshake_failure",
        "bad_certificate",
        "unsupported_certificate",
        "certificate_revoked",
        "certificate_expired",
        "certificate_unknown",
        "unknown_ca",
        "access_denied",
        "decrypt_error",
        "bad_certificate_status_response",
        "user_canceled",
        "internal_error",
    }
)


def name_of(code: int) -> str | None:
    """The alert's name for its number, or None for a number no RFC here defines."""
    alert = BY_CODE.get(code)
    return alert.name if alert else None


def refuses_certificate(name: str | None) -> bool:
    """Whether a client that sent this alert refused the certificate (an unknown or missing
    name counts: RFC 8446 §6 treats an unknown alert as an error alert)."""
    return name is None or name in CERTIFICATE_ALERTS or name not in BY_NAME

"""The causes the diagnosis decides from the whole session, not from one check.

Identity rules (:class:`~certmatch.core.identity.IdentityRule`), trust problems
(:class:`~certmatch.core.trust.TrustProblemId`) and STARTTLS findings
(:class:`~certmatch.core.starttls_findings.StartTlsFinding`) each judge one part of
a session. What is left needs the session as a whole: the errors on either side,
the SNI and the probe, the mail domain, where the name judged against came from,
and the verdict that no specific rule explains. Each member's value is its cause id, and each member names, last, the
function of :mod:`certmatch.core.findings` that decides it.
"""

from __future__ import annotations

from enum import StrEnum


class SessionRule(StrEnum):
    """A cause decided from the whole session; the catalogue binds each to its cause."""

    UPSTREAM_UNREACHABLE = "upstream-unreachable"
    """No certificate arrived and the server side did not fail in TLS.
    Decided in ``_no_certificate``."""
    UPSTREAM_TLS_FAILED = "upstream-tls-failed"
    """No certificate arrived because the TLS handshake with the server failed (RFC 8314 §3).
    Decided in ``_no_certificate``."""
    UPSTREAM_STARTTLS_FAILED = "upstream-starttls-failed"
    """A STARTTLS server broke off the plaintext phase before any TLS handshake: it sent no
    greeting or no reply to the upgrade in time, closed the connection (not after the client's
    QUIT or LOGOUT), or answered with bytes that are not the protocol (RFC 5321 §4.1.1.10,
    RFC 3207 §4). Never a TLS failure: no handshake began. Decided in ``_no_certificate``."""
    SIDE_HANDSHAKE_FAILED = "side-handshake-failed"
    """Observe mode: the relayed handshake hid the certificate (TLS 1.3 encrypts it, RFC 8446
    §1.2; a resumed session carries none, §2.2), and certmatch's own second handshake to the
    server, made to fetch it, failed or timed out. Nothing is known of the certificate the
    client saw. Decided in ``_no_certificate``."""
    MALFORMED_CERTIFICATE = "malformed-certificate"
    """The leaf, or the names in it, cannot be read (RFC 5280 §4.1).
    Decided in ``_unreadable_leaf``."""
    CLIENT_CLOSED_BEFORE_HANDSHAKE = "client-closed-before-handshake"
    """The client closed the connection before sending a byte, so no TLS handshake began
    (a ClientHello comes first, RFC 8446 §4.1.2): a port check or health probe, never a
    fault of the server. Decided in ``_closed_before_handshake``."""
    CLIENT_STOPPED_BEFORE_HANDSHAKE = "client-stopped-before-handshake"
    """The client stopped before any TLS handshake, the server not at fault: it sent no
    SOCKS5 request (RFC 1928 §4), no HTTP CONNECT request (RFC 9110 §9.3.6) or no
    ClientHello (RFC 8446 §4.1.2) within the timeout, or hung up after asking for STARTTLS.
    Decided in ``_no_certificate``."""
    PROXY_CA_NOT_TRUSTED = "proxy-ca-not-trusted"
    """The client refused the certificate certmatch showed it, although the server's own
    certificate passes for the name the client gave: the client does not trust
    certmatch's CA (or pins the server's key). Never when the certificate itself fails,
    the client's own name check included. Decided in ``_client_refused``."""
    CLIENT_REFUSED_CERTIFICATE = "client-refused-certificate"
    """The client sent an alert (RFC 8446 §6.2, RFC 5246 §7.2), or closed the connection
    in the handshake or after it without sending application data, instead of going on.
    Decided in ``_client_refused``."""
    NO_SNI_DEFAULT_CERTIFICATE = "no-sni-default-certificate"
    """No SNI, and asked by name the server sends a certificate that matches (or nobody
    asked) (RFC 6066 §3). Decided in ``_no_sni_default_certificate``."""
    MAIL_DOMAIN_NOT_SERVER = "mail-domain-not-server"
    """The client asked for the mail domain; the certificate names hosts inside it
    (RFC 7817 §3, RFC 6186 §4). Decided in ``_mail_domain_not_server``."""
    NAME_NOT_IN_CERTIFICATE = "name-not-in-certificate"
    """The name fails and neither a specific identity rule nor the session explains why
    (RFC 6125 §6.4.1, RFC 9525 §6.3). Decided in ``_name_not_in_certificate``, the only
    place that decides this cause."""
    SNI_IP_LITERAL = "sni-ip-literal"
    """The client sent an IP address as SNI, which RFC 6066 §3 forbids ("Literal IPv4 and
    IPv6 addresses are not permitted in HostName"). Decided in ``_sni_ip_literal``."""
    REQUESTED_HOST_ASSUMED = "requested-host-assumed"
    """The client sent no SNI, and the name the certificate was judged against did not come
    from the client either: the reverse-proxy target, or a destination the client did not
    name (RFC 6066 §3, RFC 9525 §6.1.1). A SOCKS5 or HTTP CONNECT target is named by the
    client, and ``--host`` is the user's own statement.
    Decided in ``_requested_host_assumed``."""

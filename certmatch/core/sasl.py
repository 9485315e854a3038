"""SASL mechanism names, so that a recording names a mechanism and never holds a credential.

A client puts the mechanism name first (RFC 4422 §3.1, ``AUTH PLAIN``); a
misconfigured one puts its initial response there instead. Only a name from
the closed list below is ever recorded; any other word is :data:`UNRECOGNISED`.
"""

from __future__ import annotations

UNRECOGNISED = "<unrecognised>"

# IANA "Simple Authentication and Security Layer (SASL) Mechanisms" registry, both of its
# tables ("SASL Mechanisms" and "SASL SCRAM Family Mechanisms"),
# https://www.iana.org/assignments/sasl-mechanisms/, last updated 2024-12-06; list taken
# 2026-11-30. Every usage is kept (COMMON, LIMITED, OBSOLETE, "MUST NOT be used"): a client
# that uses an obsolete mechanism is still using that mechanism, not sending a credential.
REGISTERED = frozenset(
    {
        "9798-M-DSA-SHA1",
        "9798-M-ECDSA-SHA1",
        "9798-M-RSA-SHA1-ENC",
        "9798-U-DSA-SHA1",
        "9798-U-ECDSA-SHA1",
        "9798-U-RSA-SHA1-ENC",
        "ANONYMOUS",
        "CRAM-MD5",
        "DIGEST-MD5",
        "EAP-AES128",
        "EAP-AES128-PLUS",
        "EXTERNAL",
        "GS2-KRB5",
        "GS2-KRB5-PLUS",
        "GSS-SPNEGO",
        "GSSAPI",
        "KERBEROS_V4",
        "KERBEROS_V5",
        "LOGIN",
        "NMAS-SAMBA-AUTH",
        "NMAS_AUTHEN",
        "NMAS_LOGIN",
        "NTLM",
        "OAUTH10A",
        "OAUTHBEARER",
        "OPENID20",
        "OTP",
        "PLAIN",
        "SAML20",
        "SECURID",
        "SKEY",
        "SPNEGO",
        "SPNEGO-PLUS",
        "SXOVER-PLUS",
        "XOAUTH",
        # the SCRAM family table
        "SCRAM-SHA-1",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-512",
        "SCRAM-SHA-512-PLUS",
        "SCRAM-SHA3-512",
        "SCRAM-SHA3-512-PLUS",
    }
)

# Not in the registry, but offered by Gmail and Outlook.com and sent by most mail clients
# (Google's and Microsoft's OAuth 2.0 mechanism): recognised, so the finding names it.
UNREGISTERED_IN_USE = frozenset({"XOAUTH2"})

MECHANISMS = REGISTERED | UNREGISTERED_IN_USE


def mechanism_name(word: bytes | str) -> str:
    """The mechanism ``word`` names (compared without regard to case), else UNRECOGNISED."""
    if isinstance(word, bytes):
        word = word.decode("ascii", "replace")
    name = word.upper() if word.isascii() else ""  # "plaın".upper() would read "PLAIN"
    return name if name in MECHANISMS else UNRECOGNISED

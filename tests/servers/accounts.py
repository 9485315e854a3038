"""Credentials and content every test server is loaded with."""

from __future__ import annotations

USER = "test"
PASSWORD = "secret"

KNOWN_BODY = "certmatch known message body: the quick brown fox 7f3a9c\r\n"
KNOWN_SUBJECT = "certmatch known message"
# The one message in the IMAP/POP3 mailbox, byte for byte as a client fetches it.
KNOWN_MESSAGE = (
    "From: Sender <sender@example.test>\r\n"
    "To: Test <test@example.test>\r\n"
    f"Subject: {KNOWN_SUBJECT}\r\n"
    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
    "Message-ID: <known-1@example.test>\r\n"
    "\r\n"
    f"{KNOWN_BODY}"
).encode()

LDAP_SUFFIX = "dc=example,dc=test"
LDAP_ROOT_DN = f"cn=admin,{LDAP_SUFFIX}"
LDAP_ROOT_PASSWORD = "secret"
LDAP_ENTRY_DN = f"uid={USER},ou=people,{LDAP_SUFFIX}"
LDAP_ENTRY_MAIL = "test@example.test"

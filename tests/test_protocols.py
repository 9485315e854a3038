"""Protocol recognition from ports, greetings and ClientHello extensions (pure)."""

from __future__ import annotations

import pytest

from certmatch.core import protocols

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(
    ("greeting", "protocol"),
    [
        (b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n", "imap"),
        (b"* PREAUTH ready\r\n", "imap"),
        (b"+OK Dovecot ready.\r\n", "pop3"),
        (b"220 mail.example.test ESMTP Postfix\r\n", "smtp"),
        (b"220-mail.example.test ESMTP\r\n", "smtp"),
        (b"200 news.example.test InterNetNews NNRP server ready\r\n", "nntp"),
        (b"201 no posting\r\n", "nntp"),
        (b"220 ProFTPD FTP server ready\r\n", "unknown"),
        (b"* ok lower-case is still IMAP\r\n", "imap"),
        (b"* OKAY\r\n", "unknown"),
        (b"* OK", "imap"),  # a line without its end is judged as far as it goes
        (b"200 news\r\n220 FTP on the second line\r\n", "nntp"),
        (b"HTTP/1.1 200 OK\r\n", "unknown"),
        (b"", "unknown"),
    ],
)
def test_server_greeting(greeting, protocol):
    assert protocols.protocol_from_server_greeting(greeting) == protocol


def test_ldap_client_speaks_first_with_a_ber_sequence():
    assert protocols.protocol_from_client_data(b"\x30\x0c\x02\x01\x01") == "ldap"
    assert protocols.protocol_from_client_data(b"a LOGIN") == "unknown"


def test_one_port_table_gives_each_port_one_protocol():
    seen: dict[int, str] = {}
    for name, ports in protocols.PORTS.items():
        assert not ports.implicit_tls & ports.starttls, name
        for port in ports.all:
            assert port not in seen, f"{port} is both {seen[port]} and {name}"
            seen[port] = name
            assert protocols.protocol_from_port(port) == name
    assert protocols.STARTTLS_PROTOCOLS == ("smtp", "submission", "imap", "pop3", "ldap", "nntp")
    assert protocols.is_starttls_port("ldap", 389) and protocols.is_starttls_port("ldap", 3268)
    assert not protocols.is_starttls_port("ldap", 636)  # implicit TLS
    assert not protocols.is_starttls_port("imap", 389)
    assert not protocols.is_starttls_port("gopher", 70)
    assert not protocols.is_starttls_port("ldap", None)


def test_port_and_refinement():
    assert protocols.protocol_from_port(993) == "imap"
    assert protocols.protocol_from_port(465) == "submission"
    assert protocols.protocol_from_port(587) == "submission"
    assert protocols.protocol_from_port(143) == "imap"
    assert protocols.protocol_from_port(3269) == "ldap"
    assert protocols.protocol_from_port(433) == "nntp"
    assert protocols.protocol_from_port(24) == "unknown"  # LMTP has no port of its own
    assert protocols.protocol_from_port(10993) == "unknown"
    assert protocols.protocol_from_port(None) == "unknown"
    assert protocols.refine_protocol("submission", "smtp") == "submission"
    assert protocols.refine_protocol("unknown", "imap") == "imap"
    assert protocols.refine_protocol("imap", "unknown") == "imap"


def test_offered_versions_from_supported_versions_skipping_grease():
    body = (
        bytes([8])
        + bytes.fromhex("0a0a")
        + bytes.fromhex("0304")
        + bytes.fromhex("0303")
        + bytes.fromhex("0302")
    )
    assert protocols.offered_tls_versions([(43, body)], 0x0303) == ["TLSv1.3", "TLSv1.2", "TLSv1.1"]


def test_offered_versions_fall_back_to_the_legacy_version():
    assert protocols.offered_tls_versions([], 0x0303) == ["TLSv1.2"]
    assert protocols.offered_tls_versions([], 0x9999) == []
    assert protocols.offered_tls_versions([(43, b"")], None) == []


def _server_name(*names: bytes) -> bytes:
    entries = b"".join(b"\x00" + len(n).to_bytes(2, "big") + n for n in names)
    return len(entries).to_bytes(2, "big") + entries


def test_server_name_is_read_exactly_as_sent():
    assert protocols.server_name_from_extensions([(0, _server_name(b"xn--strae-oqa.de"))]) == (
        "xn--strae-oqa.de"
    )
    assert protocols.server_name_from_extensions([(0, _server_name(b"a\xffb"))]) == "a\\xffb"
    assert protocols.server_name_from_extensions([(16, b"\x00\x03\x02h2")]) is None
    assert protocols.server_name_from_extensions([(0, b"\x00")]) is None  # truncated: no crash
    assert protocols.sendable_sni("xn--strae-oqa.de")
    assert not protocols.sendable_sni("a" * 70 + ".example")

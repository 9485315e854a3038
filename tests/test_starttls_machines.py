"""The pure STARTTLS machines: recognition per protocol, split and coalesced reads, findings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certmatch.core import causes, ldap_ber, protocols
from certmatch.core.facts import SessionFacts, StartTlsFacts
from certmatch.core.starttls import (
    ACCEPTED,
    FAILED,
    GREETING,
    MACHINES,
    NEEDS_MORE,
    PLAINTEXT,
    REFUSED,
    REQUESTED,
    STARTTLS_PROTOCOLS,
    Relay,
    StartTlsMachine,
    detect_protocol,
    make_machine,
)
from certmatch.core.starttls_findings import StartTlsFinding, starttls_findings

pytestmark = pytest.mark.pure

# -- a conversation runner ----------------------------------------------------------


def talk(machine: StartTlsMachine, *turns: tuple[str, bytes]) -> tuple[bytes, bytes]:
    """Feed ("c"|"s", bytes) turns; return everything relayed (to the server, to the client)."""
    to_server = bytearray()
    to_client = bytearray()
    for side, data in turns:
        relay = machine.client_data(data) if side == "c" else machine.server_data(data)
        to_server += relay.to_server
        to_client += relay.to_client
    return bytes(to_server), bytes(to_client)


def one_byte_at_a_time(side: str, data: bytes) -> list[tuple[str, bytes]]:
    return [(side, data[i : i + 1]) for i in range(len(data))]


SMTP_GREETING = b"220-smtp.example.test ESMTP\r\n220 ready\r\n"
SMTP_EHLO_REPLY = b"250-smtp.example.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS AUTH=PLAIN] ready\r\n"
POP3_CAPA = b"+OK\r\nTOP\r\nUSER\r\nSTLS\r\nSASL PLAIN\r\n.\r\n"
NNTP_CAPA = b"101 Capability list:\r\nVERSION 2\r\nREADER\r\nSTARTTLS\r\n.\r\n"


# Each protocol's full upgrade: (protocol, turns up to and including the positive reply,
# the positive reply's text as recorded).
UPGRADES = {
    "smtp": (
        [
            ("s", SMTP_GREETING),
            ("c", b"EHLO me\r\n"),
            ("s", SMTP_EHLO_REPLY),
            ("c", b"STARTTLS\r\n"),
            ("s", b"220 2.0.0 go ahead\r\n"),
        ],
        "220 2.0.0 go ahead",
    ),
    "imap": (
        [("s", IMAP_GREETING), ("c", b"a1 STARTTLS\r\n"), ("s", b"a1 OK Begin TLS now\r\n")],
        "a1 OK Begin TLS now",
    ),
    "pop3": (
        [
            ("s", b"+OK POP3 ready\r\n"),
            ("c", b"CAPA\r\n"),
            ("s", POP3_CAPA),
            ("c", b"STLS\r\n"),
            ("s", b"+OK Begin TLS\r\n"),
        ],
        "+OK Begin TLS",
    ),
    "nntp": (
        [
            ("s", b"200 news ready\r\n"),
            ("c", b"CAPABILITIES\r\n"),
            ("s", NNTP_CAPA),
            ("c", b"STARTTLS\r\n"),
            ("s", b"382 Continue with TLS negotiation\r\n"),
        ],
        "382 Continue with TLS negotiation",
    ),
}


# -- LDAP messages, built with the one codec (tests/test_ldap_ber.py checks it byte for byte) --

tlv = ldap_ber.encode


def ldap_message(message_id: int, op: bytes) -> bytes:
    return tlv(ldap_ber.SEQUENCE, ldap_ber.encode_integer(message_id) + op)


STARTTLS_REQUEST = ldap_ber.extended_request(1, ldap_ber.STARTTLS_OID).encode()


def extended_response(message_id: int, code: int, message: bytes = b"") -> bytes:
    operation = ldap_ber.Operation.EXTENDED_RESPONSE
    return ldap_ber.result(message_id, operation, code, message.decode()).encode()


def simple_bind(message_id: int, password: bytes) -> bytes:
    body = tlv(0x02, b"\x03") + tlv(0x04, b"cn=admin,dc=example,dc=test") + tlv(0x80, password)
    return ldap_message(message_id, tlv(0x60, body))


UPGRADES["ldap"] = (
    [("c", STARTTLS_REQUEST), ("s", extended_response(1, 0))],
    "resultCode 0 (success)",
)


# -- the upgrade, per protocol ----------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(UPGRADES))
def test_each_protocol_relays_unchanged_and_recognises_the_upgrade(protocol: str) -> None:
    turns, reply = UPGRADES[protocol]
    machine = make_machine(protocol)
    to_server, to_client = talk(machine, *turns)
    assert to_server == b"".join(d for s, d in turns if s == "c")
    assert to_client == b"".join(d for s, d in turns if s == "s")
    assert machine.accepted and machine.phase == ACCEPTED
    facts = machine.facts
    assert (facts.client_requested, facts.server_reply) == (True, reply)
    assert facts.server_offered is (None if protocol == "ldap" else True)
    assert facts.injection is None and facts.plaintext_auth is None


@pytest.mark.parametrize("protocol", sorted(UPGRADES))
def test_each_protocol_copes_with_one_byte_reads(protocol: str) -> None:
    turns, reply = UPGRADES[protocol]
    machine = make_machine(protocol)
    split = [piece for side, data in turns for piece in one_byte_at_a_time(side, data)]
    to_server, to_client = talk(machine, *split)
    assert to_client == b"".join(d for s, d in turns if s == "s")
    assert to_server == b"".join(d for s, d in turns if s == "c")
    assert machine.accepted and machine.facts.server_reply == reply
    assert machine.facts.injection is None


@pytest.mark.parametrize("protocol", sorted(UPGRADES))
def test_bytes_after_the_positive_reply_are_an_injection_and_not_relayed(protocol: str) -> None:
    turns, _ = UPGRADES[protocol]
    machine = make_machine(protocol)
    *before, (side, last) = turns
    talk(machine, *before)
    smuggled = b"250 injected\r\n" if protocol != "ldap" else extended_response(2, 0)
    _, to_client = talk(machine, (side, last + smuggled))
    assert to_client == last  # the reply itself, and nothing after it
    assert machine.accepted
    assert machine.facts.injection is not None
    assert f"the server sent {len(smuggled)} byte(s)" in machine.facts.injection


@pytest.mark.parametrize("protocol", sorted(UPGRADES))
def test_client_bytes_pipelined_after_the_request_are_held_and_counted(protocol: str) -> None:
    turns, _ = UPGRADES[protocol]
    machine = make_machine(protocol)
    *before, reply = turns
    *before, (_, request) = before
    talk(machine, *before)
    pipelined = b"a2 LOGIN test secret\r\n" if protocol != "ldap" else simple_bind(2, b"secret")
    to_server, _ = talk(machine, ("c", request + pipelined))
    assert to_server == request
    assert machine.phase == REQUESTED
    talk(machine, reply)
    assert machine.accepted
    assert f"the client sent {len(pipelined)} byte(s)" in (machine.facts.injection or "")
    assert machine.facts.plaintext_auth is None  # held bytes are never parsed as commands


def test_late_server_bytes_add_to_the_injection_count() -> None:
    machine = make_machine("imap")
    talk(machine, *UPGRADES["imap"][0])
    assert machine.server_data(b"* OK fake\r\n") == Relay()
    machine.late_server_bytes(3)
    assert machine.facts.injection is not None
    assert "the server sent 14 byte(s)" in machine.facts.injection


def test_a_reply_coalesced_with_earlier_replies_is_matched_to_its_command() -> None:
    """SMTP PIPELINING: the STARTTLS reply arrives in the same read as the replies before it."""
    machine = make_machine("submission")
    talk(machine, ("s", SMTP_GREETING), ("c", b"EHLO me\r\nNOOP\r\nSTARTTLS\r\n"))
    assert machine.phase == REQUESTED
    _, to_client = talk(machine, ("s", SMTP_EHLO_REPLY + b"250 ok\r\n220 go ahead\r\n"))
    assert to_client.endswith(b"220 go ahead\r\n")
    assert machine.accepted and machine.facts.server_reply == "220 go ahead"
    assert machine.protocol == "submission"


# -- refused, not offered --------------------------------------------------------------

REFUSALS = {
    "smtp": (
        [
            ("s", SMTP_GREETING),
            ("c", b"EHLO me\r\n"),
            ("s", SMTP_EHLO_REPLY),
            ("c", b"STARTTLS\r\n"),
        ],
        b"454 4.7.0 TLS not available\r\n",
    ),
    "imap": ([("s", IMAP_GREETING), ("c", b"a1 STARTTLS\r\n")], b"a1 NO not now\r\n"),
    "pop3": ([("s", b"+OK hi\r\n"), ("c", b"STLS\r\n")], b"-ERR no TLS\r\n"),
    "nntp": ([("s", b"201 ro\r\n"), ("c", b"STARTTLS\r\n")], b"580 Can not initiate TLS\r\n"),
    "ldap": ([("c", STARTTLS_REQUEST)], extended_response(1, 52, b"no TLS configured")),
}


@pytest.mark.parametrize("protocol", sorted(REFUSALS))
def test_a_refusal_releases_held_bytes_as_plaintext(protocol: str) -> None:
    before, refusal = REFUSALS[protocol]
    machine = make_machine(protocol)
    talk(machine, *before)
    later = b"QUIT\r\n" if protocol != "ldap" else ldap_message(3, tlv(0x42, b""))  # unbind
    assert talk(machine, ("c", later)) == (b"", b"")  # held while the reply is due
    to_server, to_client = talk(machine, ("s", refusal))
    assert to_client == refusal
    assert to_server == later
    assert machine.phase == REFUSED and not machine.accepted
    assert machine.facts.server_reply
    facts = SessionFacts(
        id="x",
        started="2026-01-01T00:00:00+00:00",
        protocol=protocol,
        tls_kind="starttls",
        starttls=machine.facts,
    )
    assert "starttls-refused" in starttls_findings(facts)


def test_ldap_refusal_reply_names_the_result_code() -> None:
    before, refusal = REFUSALS["ldap"]
    machine = make_machine("ldap")
    talk(machine, *before, ("s", refusal))
    assert machine.facts.server_reply == "resultCode 52 (unavailable): no TLS configured"


@pytest.mark.parametrize(
    ("protocol", "turns"),
    [
        (
            "smtp",
            [("s", b"220 hi\r\n"), ("c", b"EHLO me\r\n"), ("s", b"250-hi\r\n250 SIZE 10\r\n")],
        ),
        ("imap", [("s", b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n")]),
        ("pop3", [("s", b"+OK hi\r\n"), ("c", b"CAPA\r\n"), ("s", b"+OK\r\nUSER\r\n.\r\n")]),
        (
            "nntp",
            [
                ("s", b"200 hi\r\n"),
                ("c", b"CAPABILITIES\r\n"),
                ("s", b"101 caps\r\nVERSION 2\r\n.\r\n"),
            ],
        ),
    ],
)
def test_a_capability_list_without_the_upgrade_is_not_offered(
    protocol: str, turns: list[tuple[str, bytes]]
) -> None:
    machine = make_machine(protocol)
    talk(machine, *turns)
    assert machine.facts.server_offered is False
    facts = SessionFacts(
        id="x",
        started="2026-01-01T00:00:00+00:00",
        protocol=protocol,
        tls_kind="starttls",
        starttls=machine.facts,
    )
    found = starttls_findings(facts)
    assert list(found) == ["starttls-not-offered"]
    assert "did not ask for it" in found["starttls-not-offered"]


def test_imap_capability_response_after_the_greeting_counts() -> None:
    machine = make_machine("imap")
    talk(machine, ("s", b"* OK hi\r\n"), ("c", b"a CAPABILITY\r\n"))
    assert machine.facts.server_offered is None
    talk(machine, ("s", b"* CAPABILITY IMAP4rev1 STARTTLS\r\na OK done\r\n"))
    assert machine.facts.server_offered is True


def test_ldap_root_dse_supported_extension_decides_offered() -> None:
    def root_dse(values: list[bytes]) -> bytes:
        attribute = tlv(
            0x30,
            tlv(0x04, b"supportedExtension") + tlv(0x31, b"".join(tlv(0x04, v) for v in values)),
        )
        return ldap_message(2, tlv(0x64, tlv(0x04, b"") + tlv(0x30, attribute)))

    with_it = make_machine("ldap")
    talk(with_it, ("s", root_dse([ldap_ber.STARTTLS_OID, b"1.3.6.1.4.1.4203.1.11.1"])))
    without = make_machine("ldap")
    talk(without, ("s", root_dse([b"1.3.6.1.4.1.4203.1.11.1"])))
    assert (with_it.facts.server_offered, without.facts.server_offered) == (True, False)


# -- plaintext authentication: the command name, never the credential -------------------

AUTH_CASES = [
    (
        "smtp",
        [
            ("s", b"220 hi\r\n"),
            ("c", b"EHLO me\r\n"),
            ("s", b"250-hi\r\n250 AUTH PLAIN\r\n"),
            ("c", b"AUTH PLAIN AHRlc3QAc2VjcmV0\r\n"),
        ],
        "AUTH PLAIN",
    ),
    (
        "smtp",
        [
            ("s", b"220 hi\r\n"),
            ("c", b"AUTH LOGIN\r\n"),
            ("s", b"334 VXNlcm5hbWU6\r\n"),
            ("c", b"dGVzdA==\r\n"),
            ("s", b"334 UGFzc3dvcmQ6\r\n"),
            ("c", b"c2VjcmV0\r\n"),
            ("s", b"235 ok\r\n"),
            ("c", b"NOOP\r\n"),
        ],
        "AUTH LOGIN",
    ),
    ("imap", [("s", b"* OK hi\r\n"), ("c", b"a LOGIN test secret\r\n")], "LOGIN"),
    (
        "imap",
        [
            ("s", b"* OK hi\r\n"),
            ("c", b"a AUTHENTICATE PLAIN\r\n"),
            ("s", b"+ \r\n"),
            ("c", b"AHRlc3QAc2VjcmV0\r\n"),
        ],
        "AUTHENTICATE PLAIN",
    ),
    (
        "pop3",
        [
            ("s", b"+OK hi\r\n"),
            ("c", b"USER test\r\n"),
            ("s", b"+OK\r\n"),
            ("c", b"PASS secret\r\n"),
        ],
        "USER, PASS",
    ),
    (
        "nntp",
        [
            ("s", b"200 hi\r\n"),
            ("c", b"AUTHINFO USER test\r\n"),
            ("s", b"381 more\r\n"),
            ("c", b"AUTHINFO PASS secret\r\n"),
        ],
        "AUTHINFO USER, AUTHINFO PASS",
    ),
    ("ldap", [("c", simple_bind(1, b"secret"))], "BIND simple"),
]


@pytest.mark.parametrize(
    ("protocol", "turns", "expected"), AUTH_CASES, ids=[f"{c[0]}-{c[2]}" for c in AUTH_CASES]
)
def test_plaintext_auth_records_the_command_name_only(
    protocol: str, turns: list[tuple[str, bytes]], expected: str
) -> None:
    machine = make_machine(protocol)
    to_server, _ = talk(machine, *turns)
    assert to_server == b"".join(d for s, d in turns if s == "c")  # relayed unchanged
    assert machine.facts.plaintext_auth == expected
    recorded = repr(machine.facts)
    for secret in ("secret", "c2VjcmV0", "AHRlc3QAc2VjcmV0", "dGVzdA=="):
        assert secret not in recorded


def test_an_anonymous_ldap_bind_is_not_authentication() -> None:
    machine = make_machine("ldap")
    talk(machine, ("c", simple_bind(1, b"")))
    assert machine.facts.plaintext_auth is None


def test_sasl_responses_are_not_mistaken_for_commands() -> None:
    """A base64 SASL response that happens to read 'STARTTLS' is not an upgrade request."""
    machine = make_machine("smtp")
    talk(
        machine,
        ("s", b"220 hi\r\n"),
        ("c", b"AUTH LOGIN\r\n"),
        ("s", b"334 VXNlcm5hbWU6\r\n"),
        ("c", b"STARTTLS\r\n"),
    )
    assert machine.phase == PLAINTEXT
    assert machine.facts.client_requested is None


# -- content that looks like commands -------------------------------------------------


def test_smtp_message_content_is_not_parsed_as_commands() -> None:
    machine = make_machine("smtp")
    talk(
        machine,
        ("s", b"220 hi\r\n"),
        ("c", b"DATA\r\n"),
        ("s", b"354 go\r\n"),
        ("c", b"STARTTLS\r\nAUTH PLAIN x\r\n.\r\n"),
        ("s", b"250 ok\r\n"),
    )
    assert machine.phase == PLAINTEXT
    assert machine.facts.plaintext_auth is None
    talk(machine, ("c", b"STARTTLS\r\n"))
    assert machine.phase == REQUESTED


def test_imap_literals_are_skipped_on_both_sides() -> None:
    machine = make_machine("imap")
    literal = b"b STARTTLS\r\nc LOGIN x y\r\n"
    talk(
        machine,
        ("s", b"* OK hi\r\n"),
        ("c", b"a APPEND INBOX {%d}\r\n" % len(literal)),
        ("s", b"+ go\r\n"),
        ("c", literal + b"\r\n"),
    )
    assert machine.phase == PLAINTEXT
    assert (machine.facts.client_requested, machine.facts.plaintext_auth) == (None, None)
    server_literal = b"x\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\n"
    talk(
        machine,
        ("s", b"* 1 FETCH (BODY[] {%d}\r\n" % len(server_literal) + server_literal + b")\r\n"),
    )
    assert machine.facts.server_offered is None


def test_pop3_multiline_bodies_are_not_parsed_as_replies() -> None:
    machine = make_machine("pop3")
    talk(
        machine,
        ("s", b"+OK hi\r\n"),
        ("c", b"RETR 1\r\nSTLS\r\n"),
        ("s", b"+OK 20 octets\r\n+OK fake\r\n..\r\n.\r\n"),
    )
    assert machine.phase == REQUESTED
    talk(machine, ("s", b"+OK go\r\n"))
    assert machine.facts.server_reply == "+OK go"


def test_nntp_article_bodies_are_not_parsed_as_commands() -> None:
    machine = make_machine("nntp")
    talk(
        machine,
        ("s", b"200 hi\r\n"),
        ("c", b"POST\r\n"),
        ("s", b"340 send\r\n"),
        ("c", b"Subject: x\r\n\r\nSTARTTLS\r\n.\r\n"),
        ("s", b"240 ok\r\n"),
        ("c", b"ARTICLE 1\r\n"),
        ("s", b"220 1 <a@b>\r\n382 fake\r\n.\r\n"),
    )
    assert machine.phase == PLAINTEXT


# -- garbage ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "turns"),
    [
        ("smtp", [("s", b"SSH-2.0-OpenSSH\r\n")]),
        ("imap", [("s", b"+OK not imap\r\n")]),
        ("pop3", [("s", b"* OK not pop\r\n")]),
        ("nntp", [("s", b"hello\r\n")]),
        ("smtp", [("s", b"220 hi\r\n"), ("c", b"STARTTLS\r\n"), ("s", b"what?\r\n")]),
        ("imap", [("s", b"* OK hi\r\n"), ("c", b"a STARTTLS\r\n"), ("s", b"a MAYBE\r\n")]),
        ("ldap", [("c", STARTTLS_REQUEST), ("s", b"HTTP/1.1 400 Bad Request\r\n")]),
    ],
)
def test_garbage_where_an_answer_is_due_fails_with_a_reason(
    protocol: str, turns: list[tuple[str, bytes]]
) -> None:
    machine = make_machine(protocol)
    *before, last = turns
    talk(machine, *before)
    _, to_client = talk(machine, last)
    assert machine.phase == FAILED and machine.failed
    assert to_client == b""  # the garbage is not relayed
    assert machine.error and "server" in machine.error


def test_phases_start_with_the_greeting_for_server_first_protocols() -> None:
    assert make_machine("imap").phase == GREETING
    assert make_machine("ldap").phase == PLAINTEXT
    assert make_machine("imap").waiting_for_server
    with pytest.raises(ValueError, match="known: smtp"):
        make_machine("gopher")


# -- choosing the protocol --------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "server", "client", "expected"),
    [
        (10143, b"* OK [CAPABILITY IMAP4rev1] hi\r\n", b"", "imap"),
        (110, b"+OK hi\r\n", b"", "pop3"),
        (2525, b"220 mx ESMTP\r\n", b"", "smtp"),
        (587, b"220 mx ESMTP\r\n", b"", "submission"),
        (21, b"220 ProFTPD Server\r\n", b"", None),
        (119, b"201 news\r\n", b"", "nntp"),
        (143, b"* OK", b"", NEEDS_MORE),
        (389, b"", STARTTLS_REQUEST, "ldap"),
        (389, b"", STARTTLS_REQUEST[:5], NEEDS_MORE),
        (10389, b"", STARTTLS_REQUEST, "ldap"),  # complete: recognised on any port
        (10389, b"", STARTTLS_REQUEST[:5], None),  # partial, off an LDAP port: not waited for
        (8000, b"", b"0 hello", None),  # a client that just starts with "0"
        (993, b"", b"\x16\x03\x01\x00\xc8\x01", None),
        (80, b"", b"GET / HTTP/1.1\r\n", None),
        (9999, b"SSH-2.0-x\r\n", b"", None),
    ],
)
def test_detect_protocol_in_auto_mode(
    port: int, server: bytes, client: bytes, expected: str | None
) -> None:
    assert detect_protocol(port, server, client) == expected


def test_detect_protocol_forced_mode_takes_any_plaintext_but_not_tls() -> None:
    assert detect_protocol(2000, b"", b"x", "pop3") == "pop3"
    assert detect_protocol(587, b"", b"", "smtp") == "submission"
    assert detect_protocol(2000, b"", b"\x16\x03\x01", "imap") is None


@pytest.mark.parametrize(
    "greeting",
    [
        b"* OK ready\r\n",
        b"* ok ready\r\n",
        b"* PREAUTH hi\r\n",
        b"* OKAY\r\n",
        b"+OK\r\n",
        b"200 news\r\n",
        b"220 mx ESMTP\r\n",
        b"220 ProFTPD FTP\r\n",
        b"SSH-2.0-x\r\n",
    ],
)
@pytest.mark.parametrize("port", [None, 25, 143, 587, 10000])
def test_detection_and_the_capture_label_read_greetings_alike(greeting: bytes, port) -> None:
    """One vocabulary: the protocol a STARTTLS machine is picked for is the session's label."""
    seen = protocols.protocol_from_server_greeting(greeting)
    label = protocols.refine_protocol(protocols.protocol_from_port(port), seen)
    assert detect_protocol(port, greeting, b"") == (None if seen == "unknown" else label)


def test_every_starttls_protocol_has_a_machine() -> None:
    assert tuple(MACHINES) == STARTTLS_PROTOCOLS
    for protocol in STARTTLS_PROTOCOLS:
        assert make_machine(protocol).protocol == protocol


# -- causes and findings ------------------------------------------------------------------


def test_starttls_causes_cite_their_standards() -> None:
    by_id = {str(f): causes.get(f) for f in StartTlsFinding}
    assert set(by_id) == {
        "starttls-not-offered",
        "starttls-refused",
        "plaintext-auth",
        "starttls-injection",
        "starttls-not-requested",
    }
    cited = {cid: " ".join(str(c) for c in cause.citations) for cid, cause in by_id.items()}
    for rfc in ("RFC 3207", "RFC 2595 §3", "RFC 4513 §3", "RFC 4642"):
        assert rfc in cited["starttls-not-offered"]
    assert "CVE-2011-0411" in cited["starttls-injection"]
    assert "Poddebniak" in cited["starttls-injection"] and "2021" in cited["starttls-injection"]
    assert {causes.get(cause_id) for cause_id in by_id} == set(by_id.values())  # in the catalogue
    for cause in by_id.values():
        cause.explanation.format_map({"detail": "d", "server": "s"})
        cause.fix.format_map({"detail": "d", "server": "s"})


def test_findings_need_starttls_facts_and_say_what_happened() -> None:
    plain = SessionFacts(id="x", started="2026-01-01T00:00:00+00:00")
    assert starttls_findings(plain) == {}
    clean = SessionFacts(
        id="x",
        started="2026-01-01T00:00:00+00:00",
        protocol="imap",
        starttls=StartTlsFacts(True, True, "a OK", None, None, "handshake"),
    )
    assert starttls_findings(clean) == {}
    machine = make_machine("pop3")
    talk(
        machine,
        ("s", b"+OK hi\r\n"),
        ("c", b"USER test\r\n"),
        ("s", b"+OK\r\n"),
        ("c", b"STLS\r\nPASS secret\r\n"),
        ("s", b"+OK go\r\n"),
    )
    facts = SessionFacts(
        id="x", started="2026-01-01T00:00:00+00:00", protocol="pop3", starttls=machine.facts
    )
    found = starttls_findings(facts)
    assert sorted(found) == ["plaintext-auth", "starttls-injection"]
    assert "USER" in found["plaintext-auth"] and "secret" not in found["plaintext-auth"]
    assert found["starttls-injection"].startswith("The client sent 13 byte(s) after its STLS")


@settings(max_examples=150, deadline=None)
@given(
    protocol=st.sampled_from(["smtp", "imap", "pop3", "ldap", "nntp"]),
    chunks=st.lists(st.tuples(st.sampled_from("cs"), st.binary(max_size=64)), max_size=12),
)
def test_no_input_makes_a_machine_raise(protocol: str, chunks: list[tuple[str, bytes]]) -> None:
    """Whatever either side sends, a machine answers with bytes to relay, never an exception."""
    machine = make_machine(protocol)
    total_from_client = sum(len(d) for s, d in chunks if s == "c")
    to_server, _ = talk(machine, *chunks)
    assert len(to_server) <= total_from_client
    assert machine.phase in ("greeting", "plaintext", "requested", "refused", "accepted", "failed")

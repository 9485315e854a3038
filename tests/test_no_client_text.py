"""No client text reaches the STARTTLS facts: a credential in every position a client could put one.

The facts of the plaintext phase are recorded, and shared. Whatever a client
sends (and whatever a server quotes back), they hold only fixed vocabulary
(command names, registered SASL mechanism names, byte counts) and the
server's own text.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certmatch.core import ldap_ber, sasl
from certmatch.core.ldap_ber import LdapMessage, Operation
from certmatch.core.starttls import PLAINTEXT, StartTlsMachine, make_machine
from certmatch.core.starttls.client_words import MAX_WORDS, MIN_WORD, ClientWords
from certmatch.core.starttls.machine import AUTH_COMMANDS, is_auth_name

pytestmark = pytest.mark.pure

USER = b"alice.smith"
PASSWORD = b"S3cr3t-Passw0rd"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


PLAIN = b64(b"\0" + USER + b"\0" + PASSWORD)  # RFC 4616: authzid NUL authcid NUL passwd
XOAUTH2 = b64(b"user=" + USER + b"\x01auth=Bearer " + PASSWORD + b"\x01\x01")
APOP_DIGEST = b"c4c9334bac560ecc979e58001b3e22fb"  # RFC 1939 §7's example digest


def recorded(machine: StartTlsMachine) -> str:
    """What a recording holds of this machine: its facts, and its error (server_error)."""
    return json.dumps({"starttls": dataclasses.asdict(machine.facts), "error": machine.error})


def assert_never_recorded(machine: StartTlsMachine, *secrets: bytes) -> None:
    """No secret is in the facts as sent or base64-encoded, in any case (upper-cased included).

    Callers pass decoded forms too: the user name and password inside a SASL message.
    """
    text = recorded(machine).lower()
    for secret in secrets:
        for form in (secret, b64(secret)):
            assert form.decode().lower() not in text, f"{form!r} reached: {recorded(machine)}"


def talk(machine: StartTlsMachine, turns: list[tuple[str, bytes]]) -> bytes:
    """Feed the turns; return what was relayed to the server (it must be the client's bytes)."""
    to_server = b""
    for side, data in turns:
        relay = machine.client_data(data) if side == "c" else machine.server_data(data)
        to_server += relay.to_server
    return to_server


# -- a credential in every position, per protocol -------------------------------------------
#
# (name, protocol, turns, expected plaintext_auth, expected server_reply). Every case that
# reaches the upgrade has a server that quotes the client in its reply, as sendmail's
# "500 5.5.1 Command unrecognized: ..." or an IMAP BAD does.

SMTP_HELLO = [("s", b"220 mx.example.test ESMTP\r\n"), ("c", b"EHLO client.example.test\r\n")]
SMTP_EHLO = ("s", b"250-mx.example.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")

CASES = [
    (
        "smtp-credential-as-mechanism",
        "smtp",
        [*SMTP_HELLO, SMTP_EHLO, ("c", b"AUTH " + PLAIN + b"\r\n")],
        "AUTH <unrecognised>",
        None,
    ),
    (
        "smtp-initial-response",
        "smtp",
        [*SMTP_HELLO, SMTP_EHLO, ("c", b"AUTH PLAIN " + PLAIN + b"\r\n"), ("s", b"235 ok\r\n")],
        "AUTH PLAIN",
        None,
    ),
    (
        "smtp-auth-login-responses",
        "smtp",
        [
            *SMTP_HELLO,
            SMTP_EHLO,
            ("c", b"AUTH LOGIN\r\n"),
            ("s", b"334 VXNlcm5hbWU6\r\n"),
            ("c", b64(USER) + b"\r\n"),
            ("s", b"334 UGFzc3dvcmQ6\r\n"),
            ("c", b64(PASSWORD) + b"\r\n"),
            ("s", b"535 5.7.8 authentication failed for " + USER + b"\r\n"),
        ],
        "AUTH LOGIN",
        None,
    ),
    (
        "smtp-xoauth2",
        "smtp",
        [*SMTP_HELLO, SMTP_EHLO, ("c", b"auth xoauth2 " + XOAUTH2 + b"\r\n")],
        "AUTH XOAUTH2",
        None,
    ),
    (
        "smtp-reply-quotes-the-mechanism-word",
        "smtp",
        [
            *SMTP_HELLO,
            SMTP_EHLO,
            ("c", b"AUTH " + PLAIN + b"\r\n"),
            ("s", b'504 5.5.4 Unrecognized authentication type "' + PLAIN + b'"\r\n'),
            ("c", b"STARTTLS\r\n"),
            ("s", b"454 4.7.0 TLS not available after " + PLAIN + b"\r\n"),
        ],
        "AUTH <unrecognised>",
        "454",
    ),
    (
        "smtp-credential-after-starttls",
        "smtp",
        [
            *SMTP_HELLO,
            SMTP_EHLO,
            ("c", b"STARTTLS " + PASSWORD + b"\r\n"),
            ("s", b"501 5.5.4 Syntax: STARTTLS " + PASSWORD + b"\r\n"),
        ],
        None,
        "501",
    ),
    (
        "imap-credential-as-mechanism",
        "imap",
        [("s", b"* OK ready\r\n"), ("c", b"a1 AUTHENTICATE " + PLAIN + b"\r\n")],
        "AUTHENTICATE <unrecognised>",
        None,
    ),
    (
        "imap-sasl-ir",
        "imap",
        [("s", b"* OK ready\r\n"), ("c", b"a1 AUTHENTICATE PLAIN " + PLAIN + b"\r\n")],
        "AUTHENTICATE PLAIN",
        None,
    ),
    (
        "imap-sasl-continuation",
        "imap",
        [
            ("s", b"* OK ready\r\n"),
            ("c", b"a1 AUTHENTICATE plain\r\n"),
            ("s", b"+ \r\n"),
            ("c", PLAIN + b"\r\n"),
            ("s", b"a1 NO [AUTHENTICATIONFAILED] no such user " + USER + b"\r\n"),
        ],
        "AUTHENTICATE PLAIN",
        None,
    ),
    (
        "imap-login-atoms",
        "imap",
        [("s", b"* OK ready\r\n"), ("c", b"a1 LOGIN " + USER + b" " + PASSWORD + b"\r\n")],
        "LOGIN",
        None,
    ),
    (
        "imap-login-literals",
        "imap",
        [
            ("s", b"* OK ready\r\n"),
            ("c", b"a1 LOGIN {%d}\r\n" % len(USER)),
            ("s", b"+ go\r\n"),
            ("c", USER + b" {%d}\r\n" % len(PASSWORD)),
            ("s", b"+ go\r\n"),
            ("c", PASSWORD + b"\r\n"),
        ],
        "LOGIN",
        None,
    ),
    (
        "imap-bad-quotes-the-command",
        "imap",
        [
            ("s", b"* OK ready\r\n"),
            ("c", b'a1 LOGIN "' + USER + b'" "' + PASSWORD + b'"\r\n'),
            ("c", b"a2 STARTTLS\r\n"),
            ("s", b'a1 NO "' + USER + b'" unknown\r\n'),
            ("s", b'a2 BAD Error in IMAP command after LOGIN "' + USER + b'"\r\n'),
        ],
        "LOGIN",
        "a2 BAD",
    ),
    (
        "imap-credential-as-tag",
        "imap",
        [
            ("s", b"* OK ready\r\n"),
            ("c", PASSWORD + b" STARTTLS\r\n"),
            ("s", PASSWORD + b" OK Begin TLS negotiation now\r\n"),
        ],
        None,
        "<tag> OK Begin TLS negotiation now",
    ),
    (
        "imap-argument-to-starttls",
        "imap",
        [
            ("s", b"* OK ready\r\n"),
            ("c", b"a1 STARTTLS " + PASSWORD + b"\r\n"),
            ("s", b"a1 BAD STARTTLS takes no argument (got " + PASSWORD[:6] + b")\r\n"),
        ],
        None,
        "a1 BAD",
    ),
    (
        "pop3-user-pass",
        "pop3",
        [
            ("s", b"+OK ready\r\n"),
            ("c", b"USER " + USER + b"\r\n"),
            ("s", b"+OK\r\n"),
            ("c", b"PASS " + PASSWORD + b"\r\n"),
            ("s", b"-ERR [AUTH] bad password for " + USER + b"\r\n"),
        ],
        "USER, PASS",
        None,
    ),
    (
        "pop3-apop",
        "pop3",
        [
            ("s", b"+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
            ("c", b"APOP " + USER + b" " + APOP_DIGEST + b"\r\n"),
        ],
        "APOP",
        None,
    ),
    (
        "pop3-credential-as-mechanism",
        "pop3",
        [("s", b"+OK ready\r\n"), ("c", b"AUTH " + PLAIN + b"\r\n")],
        "AUTH <unrecognised>",
        None,
    ),
    (
        "pop3-initial-response",
        "pop3",
        [("s", b"+OK ready\r\n"), ("c", b"AUTH PLAIN " + PLAIN + b"\r\n")],
        "AUTH PLAIN",
        None,
    ),
    (
        "pop3-stls-refusal-quotes-the-client",
        "pop3",
        [
            ("s", b"+OK ready\r\n"),
            ("c", b"USER " + USER + b"\r\n"),
            ("s", b"+OK\r\n"),
            ("c", b"STLS\r\n"),
            ("s", b"-ERR not for " + USER + b"\r\n"),
        ],
        "USER",
        "-ERR",
    ),
    (
        "nntp-authinfo-user-pass",
        "nntp",
        [
            ("s", b"200 news ready\r\n"),
            ("c", b"AUTHINFO USER " + USER + b"\r\n"),
            ("s", b"381 more\r\n"),
            ("c", b"authinfo pass " + PASSWORD + b"\r\n"),
        ],
        "AUTHINFO USER, AUTHINFO PASS",
        None,
    ),
    (
        "nntp-credential-as-subcommand",
        "nntp",
        [("s", b"200 news ready\r\n"), ("c", b"AUTHINFO " + PASSWORD + b"\r\n")],
        "AUTHINFO <unrecognised>",
        None,
    ),
    (
        "nntp-sasl-credential-as-mechanism",
        "nntp",
        [("s", b"200 news ready\r\n"), ("c", b"AUTHINFO SASL " + PLAIN + b"\r\n")],
        "AUTHINFO SASL <unrecognised>",
        None,
    ),
    (
        "nntp-sasl-initial-response",
        "nntp",
        [("s", b"200 news ready\r\n"), ("c", b"AUTHINFO SASL PLAIN " + PLAIN + b"\r\n")],
        "AUTHINFO SASL PLAIN",
        None,
    ),
    (
        "nntp-authinfo-generic",
        "nntp",
        [
            ("s", b"200 news ready\r\n"),
            ("c", b"AUTHINFO GENERIC " + PASSWORD + b" " + USER + b"\r\n"),
            ("s", b"502 no GENERIC " + PASSWORD + b"\r\n"),
            ("c", b"STARTTLS\r\n"),
            ("s", b"580 no TLS for " + USER + b"\r\n"),
        ],
        "AUTHINFO GENERIC",
        "580",
    ),
]


def ldap_message(message_id: int, operation: int, content: bytes) -> bytes:
    return LdapMessage(message_id, operation, content).encode()


def bind(message_id: int, name: bytes, authentication: bytes) -> bytes:
    version = ldap_ber.encode_integer(3)
    body = version + ldap_ber.encode(ldap_ber.OCTET_STRING, name) + authentication
    return ldap_message(message_id, Operation.BIND_REQUEST, body)


def sasl_bind(message_id: int, mechanism: bytes, credentials: bytes | None) -> bytes:
    inner = ldap_ber.encode(ldap_ber.OCTET_STRING, mechanism)
    if credentials is not None:
        inner += ldap_ber.encode(ldap_ber.OCTET_STRING, credentials)
    return bind(message_id, b"", ldap_ber.encode(0xA3, inner))


def starttls_request(message_id: int, value: bytes | None = None) -> bytes:
    content = ldap_ber.encode(ldap_ber.REQUEST_NAME, ldap_ber.STARTTLS_OID)
    if value is not None:
        content += ldap_ber.encode(0x81, value)  # requestValue [1]
    return ldap_message(message_id, Operation.EXTENDED_REQUEST, content)


def starttls_response(message_id: int, code: int, text: bytes) -> bytes:
    result = ldap_ber.LdapResult(code, diagnostic_message=text).encode()
    return ldap_message(message_id, Operation.EXTENDED_RESPONSE, result)


DN = b"uid=" + USER + b",dc=example,dc=test"

CASES += [
    (
        "ldap-simple-bind",
        "ldap",
        [
            ("c", bind(1, DN, ldap_ber.encode(0x80, PASSWORD))),
            ("c", starttls_request(2)),
            ("s", starttls_response(2, 1, b"bind of " + DN + b" in progress")),
        ],
        "BIND simple",
        "resultCode 1 (operationsError)",
    ),
    (
        "ldap-credential-as-mechanism",
        "ldap",
        [("c", sasl_bind(1, PLAIN, None))],
        "BIND SASL <unrecognised>",
        None,
    ),
    (
        "ldap-sasl-credentials",
        "ldap",
        [("c", sasl_bind(1, b"PLAIN", base64.b64decode(PLAIN)))],
        "BIND SASL PLAIN",
        None,
    ),
    (
        "ldap-starttls-request-value",
        "ldap",
        [
            ("c", starttls_request(1, PASSWORD)),
            ("s", starttls_response(1, 2, b"unexpected requestValue " + PASSWORD)),
        ],
        None,
        "resultCode 2 (protocolError)",
    ),
]


@pytest.mark.parametrize(
    ("protocol", "turns", "auth", "reply"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_credential_never_reaches_the_facts(
    protocol: str, turns: list[tuple[str, bytes]], auth: str | None, reply: str | None
) -> None:
    machine = make_machine(protocol)
    to_server = talk(machine, turns)
    assert to_server == b"".join(data for side, data in turns if side == "c")  # relayed as sent
    assert (machine.facts.plaintext_auth, machine.facts.server_reply) == (auth, reply)
    assert_never_recorded(machine, USER, PASSWORD, PLAIN, XOAUTH2, APOP_DIGEST)


def test_the_issue_example_records_no_credential() -> None:
    """Issue 13: `AUTHENTICATE AHRLC3QAC2VJCMV0` was recorded, the credential upper-cased."""
    machine = make_machine("imap")
    talk(machine, [("s", b"* OK hi\r\n"), ("c", b"a AUTHENTICATE AHRlc3QAc2VjcmV0\r\n")])
    assert machine.facts.plaintext_auth == "AUTHENTICATE <unrecognised>"
    assert_never_recorded(machine, b"AHRlc3QAc2VjcmV0", b"test", b"secret")


@pytest.mark.parametrize(
    ("protocol", "turns"),
    [
        (
            "smtp",
            [
                ("s", b"220 hi\r\n"),
                ("c", b"AUTH PLAIN " + PLAIN + b"\r\nSTARTTLS\r\n"),
                ("s", b"AUTH PLAIN " + PLAIN + b"\r\n"),  # an echo, not an SMTP reply
            ],
        ),
        (
            "pop3",
            [
                ("s", b"+OK hi\r\n"),
                ("c", b"PASS " + PASSWORD + b"\r\nSTLS\r\n"),
                ("s", b"PASS " + PASSWORD + b"\r\n"),
            ],
        ),
        (
            "nntp",
            [
                ("s", b"200 hi\r\n"),
                ("c", b"AUTHINFO PASS " + PASSWORD + b"\r\nSTARTTLS\r\n"),
                ("s", b"AUTHINFO PASS " + PASSWORD + b"\r\n"),
            ],
        ),
        (
            "imap",
            [
                ("s", b"* OK hi\r\n"),
                ("c", b"a1 LOGIN " + USER + b" " + PASSWORD + b"\r\na2 STARTTLS\r\n"),
                ("s", b"a2 MAYBE " + PASSWORD + b"\r\n"),
            ],
        ),
    ],
)
def test_an_error_quoting_a_server_that_echoes_the_client_hides_the_bytes(
    protocol: str, turns: list[tuple[str, bytes]]
) -> None:
    """The error message (recorded as server_error) shows server bytes, unless they echo."""
    machine = make_machine(protocol)
    talk(machine, turns)
    assert machine.failed
    assert machine.error is not None and "not shown: they repeat what the client sent" in (
        machine.error
    )
    assert_never_recorded(machine, USER, PASSWORD, PLAIN)


def test_server_text_that_repeats_no_client_word_is_kept() -> None:
    machine = make_machine("smtp")
    talk(
        machine,
        [
            *SMTP_HELLO,
            SMTP_EHLO,
            ("c", b"STARTTLS\r\n"),
            ("s", b"220 2.0.0 Ready to start TLS\r\n"),
        ],
    )
    assert machine.facts.server_reply == "220 2.0.0 Ready to start TLS"


def test_a_long_imap_tag_is_not_recorded_but_a_short_one_is() -> None:
    long_tag, short_tag = make_machine("imap"), make_machine("imap")
    talk(long_tag, [("s", b"* OK\r\n"), ("c", b"KDNH3 STARTTLS\r\n"), ("s", b"KDNH3 OK go\r\n")])
    talk(short_tag, [("s", b"* OK\r\n"), ("c", b"a1 STARTTLS\r\n"), ("s", b"a1 OK go\r\n")])
    assert long_tag.facts.server_reply == "<tag> OK go"
    assert short_tag.facts.server_reply == "a1 OK go"


def test_client_words_are_found_across_reads_in_base64_and_past_the_bound() -> None:
    words = ClientWords(frozenset({b"starttls"}))
    for byte in b"a1 LOGIN alice.sm":
        words.feed(bytes([byte]))
    assert words.quoted_in(b"NO unknown user ALICE.SMITH")  # not ended yet, and upper-cased
    words.feed(b"ith " + PLAIN + b"\r\nSTARTTLS\r\n")
    assert words.quoted_in(b"bad password " + PASSWORD)  # decoded from the SASL PLAIN message
    assert not words.quoted_in(b"OK Begin STARTTLS now")  # vocabulary and short words
    for n in range(MAX_WORDS):
        words.feed(b"word%04d " % n)
    assert words.overflowed and words.quoted_in(b"anything at all")


# -- the vocabulary -------------------------------------------------------------------------


def test_the_sasl_vocabulary_holds_the_common_mechanisms_and_only_names() -> None:
    common = {
        "PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "GSSAPI", "GS2-KRB5", "EXTERNAL",
        "ANONYMOUS", "NTLM", "OAUTHBEARER", "XOAUTH2", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "OTP", "SKEY", "GSS-SPNEGO", "SECURID",
        "KERBEROS_V4",
    }  # fmt: skip
    assert common <= sasl.MECHANISMS
    assert "XOAUTH2" not in sasl.REGISTERED  # in use, but never registered with IANA
    for name in sasl.MECHANISMS:  # RFC 4422 §3.1: 1 to 20 of A-Z 0-9 - _
        assert re.fullmatch(r"[A-Z0-9_-]{1,20}", name), name
    assert sasl.mechanism_name(b"scram-sha-256") == "SCRAM-SHA-256"
    assert sasl.mechanism_name(b"AHRlc3QAc2VjcmV0") == sasl.UNRECOGNISED
    assert sasl.mechanism_name("plaın") == sasl.UNRECOGNISED  # "ı".upper() == "I"
    assert sasl.mechanism_name(b"") == sasl.UNRECOGNISED


def test_auth_names_are_a_command_then_maybe_a_mechanism() -> None:
    assert is_auth_name("AUTH PLAIN") and is_auth_name("AUTHINFO SASL <unrecognised>")
    assert is_auth_name("BIND simple") and is_auth_name("USER")
    assert not is_auth_name("AUTH AHRLC3QAC2VJCMV0")
    assert not is_auth_name("LOGIN alice")
    assert not is_auth_name("")


# -- properties ---------------------------------------------------------------------------

# Words a client types: each holds a digit, so none can be a word of the fixed texts.
WORDS = st.from_regex(r"\A[A-Za-z0-9]{0,10}[0-9][A-Za-z0-9]{0,10}\Z")
SYNTAX = st.sampled_from(
    [
        "AUTH", "AUTHENTICATE", "LOGIN", "USER", "PASS", "APOP", "AUTHINFO", "SASL", "GENERIC",
        "PLAIN", "login", "XOAUTH2", "STARTTLS", "STLS", "EHLO", "CAPA", "DATA", "POST", "a1",
        "a", '"', "(", "{3}", "{2+}", "*", "+", ".", "=",
    ]
)  # fmt: skip
TOKENS = st.one_of(SYNTAX, WORDS)
UPGRADES = st.tuples(
    st.lists(TOKENS, max_size=1),
    st.sampled_from(["STARTTLS", "STLS"]),
    st.lists(TOKENS, max_size=2),
).map(lambda parts: " ".join([*parts[0], parts[1], *parts[2]]))
LINES = st.one_of(st.lists(TOKENS, min_size=1, max_size=5).map(" ".join), UPGRADES)

# Reply codes the test servers use, per protocol; a reply is the code and the client's line.
CODES = {
    "smtp": ["220", "235", "250", "334", "354", "454", "502"],
    "imap": ["OK", "NO", "BAD", "+", "*"],
    "pop3": ["+OK", "-ERR", "+"],
    "nntp": ["200", "281", "340", "381", "382", "383", "580"],
}
REPLY_CODES = {  # what a reply is cut down to when it may quote the client
    "smtp": r"\d{3}",
    "imap": r"(<tag>|\w{1,3}) (OK|NO|BAD)",
    "pop3": r"\+OK|-ERR",
    "nntp": r"\d{3}",
}
GREETINGS = {
    "smtp": b"220 hi\r\n",
    "imap": b"* OK hi\r\n",
    "pop3": b"+OK hi\r\n",
    "nntp": b"200 hi\r\n",
}
INJECTION = re.compile(
    r"(the client sent \d+ byte\(s\) after its \w+ request, before the server's reply)?"
    r"(; )?(the server sent \d+ byte\(s\) after its positive \w+ reply, before the TLS handshake)?"
)


def echo(protocol: str, code: str, line: str) -> bytes:
    """A server that quotes the client's whole line in its reply."""
    if protocol == "imap" and code not in ("+", "*"):
        tag = line.split()[0] if line.split() else "x"
        return f"{tag} {code} {line}\r\n".encode()
    return f"{code} {line}\r\n".encode()


def client_runs(lines: list[str]) -> set[str]:
    """The client's words a server could quote: runs of letters and digits with a digit."""
    runs = {run.lower() for line in lines for run in re.findall(r"[A-Za-z0-9]+", line)}
    names = {name.lower() for name in sasl.MECHANISMS}  # vocabulary: "XOAUTH2" may be recorded
    return {
        run
        for run in runs
        if len(run) >= MIN_WORD and re.search(r"[0-9]", run) and run not in names
    }


@settings(max_examples=300, deadline=None)
@given(
    protocol=st.sampled_from(sorted(CODES)),
    exchange=st.lists(st.tuples(LINES, st.integers(min_value=0, max_value=6)), max_size=8),
)
def test_every_recorded_string_is_vocabulary_or_server_text(
    protocol: str, exchange: list[tuple[str, int]]
) -> None:
    """Arbitrary client lines, each answered by a server that quotes it back."""
    machine = make_machine(protocol)
    machine.server_data(GREETINGS[protocol])
    server_lines = []
    for line, pick in exchange:
        machine.client_data(line.encode() + b"\r\n")
        codes = CODES[protocol]
        reply = echo(protocol, codes[pick % len(codes)], line)
        server_lines.append(reply.decode().strip())
        machine.server_data(reply)
    facts = machine.facts
    for name in (facts.plaintext_auth or "").split(", ") if facts.plaintext_auth else []:
        command, _, mechanism = name.rpartition(" ")
        assert name in AUTH_COMMANDS or (
            command in AUTH_COMMANDS and mechanism in sasl.MECHANISMS | {sasl.UNRECOGNISED}
        ), name
    assert INJECTION.fullmatch(facts.injection or "")
    assert facts.phase in ("greeting", "plaintext", "requested", "refused", "accepted", "failed")
    if facts.server_reply is not None:
        as_sent = {line[:200] for line in server_lines}
        tag_hidden = {("<tag>" + line[len(line.split()[0]) :])[:200] for line in server_lines}
        assert (
            re.fullmatch(REPLY_CODES[protocol], facts.server_reply)
            or facts.server_reply in as_sent | tag_hidden
        ), (facts.server_reply, server_lines)
    text = f"{facts.server_reply} {machine.error}".lower()
    for run in client_runs([line for line, _ in exchange]):
        assert run not in text, (run, facts.server_reply, machine.error)


SECRETS = st.from_regex(r"\AS3cr[A-Za-z0-9+/]{4,40}\Z")

# A credential where a client could put it: {s} is the secret, {b} its base64 form.
POSITIONS = [
    ("smtp", ["AUTH {s}", "STARTTLS"]),
    ("smtp", ["AUTH {b}", "STARTTLS"]),
    ("smtp", ["AUTH PLAIN {b}", "STARTTLS"]),
    ("smtp", ["AUTH LOGIN", "{b}", "STARTTLS"]),
    ("smtp", ["STARTTLS {s}"]),
    ("imap", ["a1 AUTHENTICATE {b}", "a2 STARTTLS"]),
    ("imap", ["a1 AUTHENTICATE PLAIN {b}", "a2 STARTTLS"]),
    ("imap", ["a1 LOGIN {s} {s}", "a2 STARTTLS"]),
    ("imap", ['a1 LOGIN "{s}" "{s}"', "a2 STARTTLS"]),
    ("imap", ["{s} STARTTLS"]),
    ("imap", ["a1 STARTTLS {s}"]),
    ("pop3", ["USER {s}", "PASS {s}", "STLS"]),
    ("pop3", ["APOP {s} {s}", "STLS"]),
    ("pop3", ["AUTH {b}", "STLS"]),
    ("pop3", ["AUTH PLAIN {b}", "STLS"]),
    ("pop3", ["STLS {s}"]),
    ("nntp", ["AUTHINFO USER {s}", "AUTHINFO PASS {s}", "STARTTLS"]),
    ("nntp", ["AUTHINFO {s}", "STARTTLS"]),
    ("nntp", ["AUTHINFO SASL {b}", "STARTTLS"]),
    ("nntp", ["AUTHINFO SASL PLAIN {b}", "STARTTLS"]),
    ("nntp", ["AUTHINFO GENERIC {s} {s}", "STARTTLS"]),
    ("nntp", ["STARTTLS {s}"]),
]


@pytest.mark.parametrize(("protocol", "lines"), POSITIONS)
@settings(max_examples=25, deadline=None)
@given(secret=SECRETS, positive=st.booleans())
def test_a_secret_in_any_position_is_never_recorded_even_when_echoed(
    protocol: str, lines: list[str], secret: str, positive: bool
) -> None:
    encoded = base64.b64encode(secret.encode()).decode()
    machine = make_machine(protocol)
    machine.server_data(GREETINGS[protocol])
    for line in lines:
        line = line.format(s=secret, b=encoded)
        machine.client_data(line.encode() + b"\r\n")
        upgrade = {"STARTTLS", "STLS"} & set(line.split())
        code = {"smtp": "220", "imap": "OK", "pop3": "+OK", "nntp": "382"}[protocol]
        if not (upgrade and positive):
            code = {"smtp": "502", "imap": "NO", "pop3": "-ERR", "nntp": "500"}[protocol]
        machine.server_data(echo(protocol, code, line))
    assert machine.facts.client_requested
    assert_never_recorded(machine, secret.encode(), encoded.encode())


@settings(max_examples=100, deadline=None)
@given(
    dn=st.binary(max_size=40),
    password=SECRETS.map(str.encode),
    mechanism=st.one_of(SECRETS.map(str.encode), st.sampled_from(sorted(sasl.MECHANISMS))),
    credentials=SECRETS.map(str.encode),
    value=st.one_of(st.none(), SECRETS.map(str.encode)),
)
def test_ldap_binds_and_a_quoting_starttls_reply_record_no_client_bytes(
    dn: bytes, password: bytes, mechanism: str | bytes, credentials: bytes, value: bytes | None
) -> None:
    mechanism = mechanism.encode() if isinstance(mechanism, str) else mechanism
    machine = make_machine("ldap")
    assert machine.phase == PLAINTEXT
    machine.client_data(bind(1, dn, ldap_ber.encode(0x80, password)))
    machine.client_data(sasl_bind(2, mechanism, credentials))
    machine.client_data(starttls_request(3, value))
    quote = b" ".join([dn, password, mechanism, credentials, value or b""])
    machine.server_data(starttls_response(3, 53, b"refused: " + quote))
    assert machine.facts.server_reply == "resultCode 53 (unwillingToPerform)"
    assert (
        machine.facts.plaintext_auth == f"BIND simple, BIND SASL {sasl.mechanism_name(mechanism)}"
    )
    secrets = [password, credentials, *([value] if value else [])]
    if mechanism.upper().decode("latin-1") not in sasl.MECHANISMS:
        secrets.append(mechanism)
    assert_never_recorded(machine, *secrets)

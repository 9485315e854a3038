"""Recordings: the JSON Lines format, its schema, reading bad files and lines, appending."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator, validator_for  # type: ignore[import-untyped]

from certmatch.core import facts, line_schema, recording
from certmatch.core.dns_facts import DnsAnswer, DnsFacts
from certmatch.core.facts import (
    FORMAT_NAME,
    FORMAT_VERSION,
    RecordingHeader,
    SessionFacts,
    SniProbe,
    StartTlsFacts,
)
from certmatch.core.line_schema import load_schema, validate_line
from certmatch.core.recording import (
    LineProblem,
    RecordingError,
    RecordingWriter,
    expand_paths,
    iter_recording,
    parse_line,
    read_recording,
)

pytestmark = pytest.mark.pure

LEAF = base64.b64encode(bytes(range(256)) * 2 + b"leaf").decode()
ISSUER = base64.b64encode(b"\x30\x82" + bytes(600)).decode()


def session(number: int = 0, **changes: Any) -> SessionFacts:
    base = SessionFacts(
        id=f"s{number}",
        started="2025-03-01T10:00:00.250000+00:00",
        protocol="imap",
        requested_host="mail.example.org",
        requested_host_source="sni",
        sni="mail.example.org",
        chain=[LEAF, ISSUER],
    )
    return dataclasses.replace(base, **changes)


def every_field_set() -> SessionFacts:
    return SessionFacts(
        id="full-1",
        started="2025-03-01T10:00:00Z",
        client_address="192.0.2.7:50123",
        proxy_mode="reverse:tls://mail.example.org:993",
        protocol="submission",
        tls_kind="starttls",
        requested_host="smtp.example.org",
        requested_host_source="reverse-target",
        sni="",
        client_tls_versions=["TLSv1.2", "TLSv1.3"],
        client_alpn=["smtp"],
        client_signature_algorithms=["ecdsa_secp256r1_sha256", "rsa_pss_rsae_sha256"],
        server_address="smtp.example.org:587",
        server_ip="198.51.100.4",
        upstream_sni="smtp.example.org",
        upstream_sni_reason="not-encodable",
        tls_version="TLSv1.3",
        cipher="TLS_AES_128_GCM_SHA256",
        chain=[LEAF, ISSUER],
        chain_source="side-handshake",
        server_error="upstream handshake: certificate verify failed",
        client_error="client alert: unknown_ca",
        presented="mirror",
        client_decision="alert",
        client_alert="unknown_ca",
        client_alert_code=48,
        client_waited=0.125,
        action="block",
        sni_probe=SniProbe(sni="smtp.example.org", chain=[ISSUER], error="timed out"),
        starttls=StartTlsFacts(
            server_offered=True,
            client_requested=False,
            server_reply="220 2.0.0 Grüße, ready",
            plaintext_auth="AUTH",
            injection="server sent 12 bytes after 220",
            phase="handshake",
        ),
        dns=DnsFacts(
            host="mail.example.org",
            resolvers=["127.0.0.1:53", "[::1]:5353"],
            server_ip="192.0.2.25",
            mail_domain="example.org",
            answers=[
                DnsAnswer("mail.example.org", "CNAME", "127.0.0.1:53", ("smtp.example.org",), 300),
                DnsAnswer("smtp.example.org", "A", "127.0.0.1:53", ("192.0.2.25",), 60),
                DnsAnswer("mail.example.org", "A", "[::1]:5353", error="timeout"),
            ],
            started="2026-01-02T03:04:05.000+00:00",
            elapsed=0.012,
        ),
        notes=["probe retried once"],
    )


def write_recording(path: Path, sessions: list[SessionFacts]) -> None:
    with RecordingWriter(path, tool_version="test-1.0") as writer:
        for item in sessions:
            writer.write(item)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def header_line(version: Any = FORMAT_VERSION) -> str:
    header = RecordingHeader(tool_version="x", created="2025-01-01T00:00:00+00:00").to_json()
    header["format_version"] = version
    return json.dumps(header) + "\n"


# --- round trip ------------------------------------------------------------------------------


def test_every_field_survives_a_round_trip(tmp_path: Path) -> None:
    full = every_field_set()
    defaults = SessionFacts(id="", started="")
    unset = [
        f.name
        for f in dataclasses.fields(SessionFacts)
        if getattr(full, f.name) == getattr(defaults, f.name)
    ]
    assert unset == [], "the round-trip sample must set every field"
    no_sni = session(1, sni=None)
    path = tmp_path / "rec.jsonl"
    write_recording(path, [full, no_sni])

    result = read_recording(path)

    assert result.problems == []
    assert result.sessions == [full, no_sni]
    assert result.sessions[0].sni == "" and result.sessions[1].sni is None


def test_header_is_the_first_line_and_names_format_and_version(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session()])
    first = json.loads(lines_of(path)[0])
    assert first["type"] == "header"
    assert first["format"] == FORMAT_NAME
    assert first["format_version"] == FORMAT_VERSION
    assert first["tool_version"] == "test-1.0"
    assert datetime.fromisoformat(first["created"]).utcoffset() is not None

    header = read_recording(path).header
    assert header == RecordingHeader(tool_version="test-1.0", created=first["created"])


def test_lines_are_compact_utf8_and_newline_terminated(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [every_field_set()])
    line = lines_of(path)[1]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b'","' in line and b'", "' not in line  # no spaces after separators
    assert "Grüße".encode() in line  # not \u-escaped


def test_lone_surrogate_from_undecodable_bytes_round_trips(tmp_path: Path) -> None:
    reply = b"220 caf\xe9".decode("utf-8", "surrogateescape")
    odd = session(starttls=StartTlsFacts(server_reply=reply))
    path = tmp_path / "rec.jsonl"
    write_recording(path, [odd])
    assert read_recording(path).sessions == [odd]


def test_unknown_extra_properties_are_ignored(tmp_path: Path) -> None:
    data = every_field_set().to_json()
    data["added_in_1_1"] = {"anything": [1, 2]}
    data["sni_probe"]["added_in_1_1"] = True
    data["starttls"]["added_in_1_1"] = "x"
    path = tmp_path / "rec.jsonl"
    path.write_text(header_line() + json.dumps(data) + "\n", encoding="utf-8")

    result = read_recording(path)

    assert result.problems == []
    assert result.sessions == [every_field_set()]


# --- files that are not recordings ---------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(RecordingError) as raised:
        read_recording(path)
    assert str(raised.value).startswith(f"{path}: no such file")
    assert "\n" not in str(raised.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(RecordingError, match="empty") as raised:
        read_recording(path)
    assert str(raised.value).startswith(str(path))


def test_pem_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "server.pem"
    path.write_text(f"-----BEGIN CERTIFICATE-----\n{LEAF[:64]}\n-----END CERTIFICATE-----\n")
    with pytest.raises(RecordingError) as raised:
        read_recording(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:1: ")
    assert "PEM" in message and "CERTIFICATE" in message
    assert "recording" in message


def test_mitmproxy_flow_file_is_named_as_such(tmp_path: Path) -> None:
    # mitmdump -w writes tnetstrings: "<length>:<payload><type tag>"
    path = tmp_path / "flows"
    path.write_bytes(b"1843:4:type;4:http,7:version;2:20#\x00\xff\x10server_conn;" + bytes(64))
    with pytest.raises(RecordingError, match="mitmproxy flow file") as raised:
        read_recording(path)
    assert str(raised.value).startswith(f"{path}:1: ")


def test_binary_file_without_newline_is_rejected_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00\x01" * 200_000)
    with pytest.raises(RecordingError, match="binary"):
        read_recording(path)


def test_session_line_without_header_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "headless.jsonl"
    path.write_text(json.dumps(session().to_json()) + "\n")
    with pytest.raises(RecordingError, match="without its header"):
        read_recording(path)


def test_newer_format_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "future.jsonl"
    path.write_text(header_line(FORMAT_VERSION + 1) + json.dumps(session().to_json()) + "\n")
    with pytest.raises(RecordingError) as raised:
        read_recording(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:1: ")
    assert f"version {FORMAT_VERSION + 1}" in message
    assert f"reads version {FORMAT_VERSION}" in message
    assert "upgrade certmatch" in message


def test_iter_recording_checks_the_header_before_iterating(tmp_path: Path) -> None:
    path = tmp_path / "server.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(RecordingError, match="PEM"):
        iter_recording(path)  # no next() needed


# --- bad lines -------------------------------------------------------------------------------


def test_bad_json_line_in_the_middle_is_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session(1), session(2)])
    with path.open("a") as file:
        file.write('{"type":"session","id": oops\n')
    write_recording(path, [session(3)])

    result = read_recording(path)

    assert [s.id for s in result.sessions] == ["s1", "s2", "s3"]
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.line == 4
    assert str(problem) == f"{path}:4: {problem.message}"
    assert "not valid JSON" in problem.message
    assert not result.partial_last_line


def mutated(**changes: Any) -> str:
    data = session().to_json()
    for key, value in changes.items():
        if value is dataclasses.MISSING:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (mutated(protocol="gopher"), ["protocol", "gopher", "imap"]),
        (mutated(chain=LEAF), ["chain", "expected array"]),
        (
            mutated(chain=[LEAF, "not base64!"]),
            ["chain[1]", "not in the expected form: one DER-encoded"],
        ),
        (mutated(sni=7), ["sni", "string or null"]),
        (mutated(started="yesterday"), ["started"]),
        (mutated(sni=dataclasses.MISSING), ["missing", "sni"]),
        (mutated(sni_probe={"sni": "a", "chain": [1], "error": None}), ["sni_probe.chain[0]"]),
        (mutated(starttls="yes"), ["starttls", "object", "null"]),
        (mutated(type="note"), ["type", "note"]),
        ("[1, 2]", ["expected object"]),
    ],
)
def test_schema_violating_line_is_reported_and_skipped(
    tmp_path: Path, line: str, expected: list[str]
) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session(1)])
    with path.open("a") as file:
        file.write(line + "\n")
    write_recording(path, [session(2)])

    result = read_recording(path)

    assert [s.id for s in result.sessions] == ["s1", "s2"]
    assert [p.line for p in result.problems] == [3]
    message = result.problems[0].message
    assert "recording schema" in message
    for fragment in expected:
        assert fragment in message


def test_truncated_last_line_from_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session(1), session(2), session(3)])
    whole = json.dumps(session(4).to_json(), separators=(",", ":"))
    with path.open("a") as file:
        file.write(whole[: len(whole) // 2])

    result = read_recording(path)

    assert [s.id for s in result.sessions] == ["s1", "s2", "s3"]
    assert [p.line for p in result.problems] == [5]
    assert result.problems[0].truncated
    assert result.partial_last_line


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text(header_line() + json.dumps(session(1).to_json()))
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s1"]
    assert result.problems == []


def test_recordings_joined_with_cat_read_as_one(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_recording(first, [session(1)])
    write_recording(second, [session(2)])
    joined = tmp_path / "joined.jsonl"
    joined.write_bytes(first.read_bytes() + b"\n" + second.read_bytes())
    result = read_recording(joined)
    assert [s.id for s in result.sessions] == ["s1", "s2"]
    assert result.problems == []


def test_damaged_header_fields_are_a_problem_not_fatal(tmp_path: Path) -> None:
    header = RecordingHeader(tool_version="x", created="not a date").to_json()
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps(session(1).to_json()) + "\n")
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s1"]
    assert [(p.line, "created" in p.message) for p in result.problems] == [(1, True)]


def test_iter_recording_streams_sessions_and_problems_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session(1)])
    with path.open("a") as file:
        file.write("garbage\n")
    write_recording(path, [session(2)])
    items = list(iter_recording(path))
    assert [type(i) for i in items] == [SessionFacts, LineProblem, SessionFacts]


# --- writing ---------------------------------------------------------------------------------


def test_writer_appends_to_an_existing_recording(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "rec.jsonl"  # parents are created
    write_recording(path, [session(1), session(2)])
    created = read_recording(path).header.created
    with RecordingWriter(path, tool_version="test-2.0") as writer:
        writer.write(session(3))

    result = read_recording(path)

    assert [s.id for s in result.sessions] == ["s1", "s2", "s3"]
    assert result.header.created == created and result.header.tool_version == "test-1.0"
    assert sum(b'"type":"header"' in line for line in lines_of(path)) == 1


def test_writer_after_a_killed_writer_keeps_the_cut_line_separate(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session(1)])
    with path.open("a") as file:
        file.write('{"type":"session","id":"s2","sta')
    write_recording(path, [session(3)])

    result = read_recording(path)

    assert [s.id for s in result.sessions] == ["s1", "s3"]
    assert [p.line for p in result.problems] == [3]
    assert "mid-record" in result.problems[0].message
    assert not result.partial_last_line


@pytest.mark.parametrize(
    "content",
    [
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        b"#!/bin/sh\necho important\n",
        header_line(FORMAT_VERSION + 1).encode(),
    ],
)
def test_writer_refuses_to_append_to_another_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "precious.txt"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match="will not append") as raised:
        RecordingWriter(path, tool_version="test")
    assert str(raised.value).startswith(str(path))
    assert path.read_bytes() == content


def test_writer_writes_header_into_an_existing_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.touch()
    write_recording(path, [session(1)])
    assert [s.id for s in read_recording(path).sessions] == ["s1"]


def pem(body: bytes) -> str:
    text = base64.b64encode(body).decode()
    return "-----BEGIN CERTIFICATE-----\n" + text + "\n-----END CERTIFICATE-----\n"


def test_writer_puts_the_ca_certificates_in_the_header_one_block_each(tmp_path: Path) -> None:
    first, second = pem(b"first root" * 10), pem(b"second root" * 10)
    bundle = "comment line\n" + first + second.replace("\n", "\r\n")
    path = tmp_path / "rec.jsonl"
    with RecordingWriter(path, tool_version="t", ca_certificates=[bundle, first]) as writer:
        writer.write(session(1))

    header = read_recording(path).header
    assert header.ca_certificates == recording.certificate_blocks(first + second)
    assert len(header.ca_certificates) == 2  # the repeated one is kept once
    assert all(p.count("BEGIN CERTIFICATE") == 1 for p in header.ca_certificates)
    assert json.loads(lines_of(path)[0])["ca_certificates"] == header.ca_certificates


def test_a_header_without_ca_certificates_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text(header_line() + json.dumps(session(1).to_json()) + "\n")
    result = read_recording(path)
    assert result.header.ca_certificates == [] and result.problems == []


def test_a_damaged_ca_certificates_list_is_a_problem_and_trusts_nothing(tmp_path: Path) -> None:
    header = json.loads(header_line())
    header["ca_certificates"] = [pem(b"root"), 7]
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps(session(1).to_json()) + "\n")
    result = read_recording(path)
    assert result.header.ca_certificates == []
    assert [p.line for p in result.problems] == [1]
    assert "ca_certificates[1]" in result.problems[0].message


def test_writer_refuses_a_ca_certificate_that_is_no_pem(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="CA certificate 1 .* holds no PEM certificate"):
        RecordingWriter(tmp_path / "rec.jsonl", tool_version="t", ca_certificates=["not pem"])
    assert not (tmp_path / "rec.jsonl").exists()


def test_writer_appends_only_under_the_same_ca_certificates(tmp_path: Path) -> None:
    root, other = pem(b"root" * 20), pem(b"other" * 20)
    path = tmp_path / "rec.jsonl"
    with RecordingWriter(path, tool_version="t", ca_certificates=[root]) as writer:
        writer.write(session(1))
    # The same certificate, written another way, is the same.
    with RecordingWriter(path, tool_version="t", ca_certificates=[root.replace("\n", "\r\n")]) as w:
        w.write(session(2))
    before = path.read_bytes()
    for anchors in ([], [other], [root, other]):
        with pytest.raises(RecordingError, match="will not append to this recording") as raised:
            RecordingWriter(path, tool_version="t", ca_certificates=anchors)
        assert "write to a new file" in str(raised.value)
    assert path.read_bytes() == before
    assert [s.id for s in read_recording(path).sessions] == ["s1", "s2"]
    plain = tmp_path / "plain.jsonl"
    write_recording(plain, [session(1)])
    with pytest.raises(
        RecordingError, match="trusts no extra CA certificates and this run 1 other"
    ):
        RecordingWriter(plain, tool_version="t", ca_certificates=[root])


def test_the_client_decision_fields_are_left_out_when_unknown() -> None:
    line = session(1).to_json()
    assert not {"presented", "client_decision", "client_alert"} & line.keys()
    assert not {"client_alert_code", "client_waited"} & line.keys()
    decided = session(1, client_decision="closed-after-handshake", client_waited=1.5).to_json()
    assert decided["client_decision"] == "closed-after-handshake"
    assert decided["client_waited"] == 1.5 and "client_alert" not in decided
    assert line_schema._plain_session(decided) and line_schema._plain_session(line)


def test_concurrent_writes_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    per_thread = 150
    with RecordingWriter(path, tool_version="test") as writer:

        def work(thread: int) -> None:
            for n in range(per_thread):
                writer.write(session(thread * 1000 + n))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    result = read_recording(path)
    assert result.problems == []
    assert len({s.id for s in result.sessions}) == 4 * per_thread


def test_write_after_close_is_an_error(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "rec.jsonl", tool_version="test")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(session())


# --- expand_paths ------------------------------------------------------------------------------


def test_expand_paths(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    (folder / "sub.jsonl").mkdir(parents=True)  # a directory, not a recording
    for name in ("b.jsonl", "a.jsonl", "notes.txt"):
        (folder / name).write_text("")
    single = tmp_path / "other.log"
    single.write_text("")

    found = expand_paths([folder, str(single), folder / "a.jsonl"])

    assert found == [folder / "a.jsonl", folder / "b.jsonl", single]


def test_expand_paths_rejects_missing_paths_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no such file"):
        expand_paths([tmp_path / "missing.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="no .*jsonl"):
        expand_paths([tmp_path / "empty"])


# --- the schema --------------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12_and_ships_in_the_package() -> None:
    schema = load_schema()
    assert validator_for(schema) is Draft202012Validator
    Draft202012Validator.check_schema(schema)
    shipped = Path(recording.__file__).with_name("recording.schema.json")
    assert json.loads(shipped.read_text(encoding="utf-8")) == schema


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_schema_describes_exactly_the_facts() -> None:
    defs = load_schema()["$defs"]
    session_props = set(defs["session"]["properties"]) - {"type"}
    assert session_props == field_names(SessionFacts)
    # Every key the writer always emits is required, so a missing one is never read as None.
    assert set(defs["session"]["required"]) == set(SessionFacts(id="", started="").to_json())
    assert set(defs["sniProbe"]["properties"]) == set(defs["sniProbe"]["required"])
    assert set(defs["sniProbe"]["properties"]) == field_names(SniProbe)
    assert set(defs["startTls"]["properties"]) == set(defs["startTls"]["required"])
    assert set(defs["startTls"]["properties"]) == field_names(StartTlsFacts)
    header_props = set(defs["header"]["properties"])
    assert header_props == field_names(RecordingHeader) | {"type"}
    assert defs["header"]["properties"]["format"]["const"] == FORMAT_NAME
    assert defs["header"]["properties"]["format_version"]["const"] == FORMAT_VERSION


def test_schema_enums_come_from_facts() -> None:
    props = load_schema()["$defs"]["session"]["properties"]
    assert props["protocol"]["enum"] == list(facts.PROTOCOLS)
    assert props["requested_host_source"]["enum"] == list(facts.HOST_SOURCES)
    assert props["tls_kind"]["enum"] == list(typing.get_args(facts.TlsKind))
    assert props["presented"]["enum"] == [*facts.PRESENTED, None]
    assert props["client_decision"]["enum"] == [*facts.CLIENT_DECISIONS, None]
    assert list(typing.get_args(facts.Presented)) == list(facts.PRESENTED)
    assert list(typing.get_args(facts.ClientDecision)) == list(facts.CLIENT_DECISIONS)
    # What a line may leave out is exactly what the schema does not require.
    optional = set(props) - set(load_schema()["$defs"]["session"]["required"])
    assert optional == set(facts.OPTIONAL_FIELDS)
    assert list(typing.get_args(facts.Protocol)) == list(facts.PROTOCOLS)
    assert list(typing.get_args(facts.HostSource)) == list(facts.HOST_SOURCES)


ODD_VALUES: list[Any] = [
    None, "", "x", "imap", "sni", "starttls", "header", "session", 0, 1, 1.0, 1.5, True, False,
    [], ["a"], [1], [LEAF], ["QUJD"], ["QUI="], ["QQ=="], ["Q"], ["QUJDRA==x"], {}, {"sni": "a"},
    "2025-01-01T00:00:00Z", "2025-01-01T00:00:00", "2025-01-01 00:00:00+00:00",
    "certmatch-recording", "mirror", "substitute", "went-on", "closed-before-handshake",
    "unknown_ca", -1, 2**70, 0.001, float("nan"), [None], [["a"]],
    {"sni": "a", "chain": [], "error": None},
    {"sni": "a", "chain": ["!"], "error": None},
    {"server_offered": 1, "client_requested": None, "server_reply": None,
     "plaintext_auth": None, "injection": None, "phase": None},
]  # fmt: skip


def schema_samples() -> list[Any]:
    """Valid lines, and every way of breaking one key at a time."""
    bases = [every_field_set().to_json(), session().to_json(), json.loads(header_line())]
    samples: list[Any] = [*bases, [], "line", None]
    for base in bases:
        for key in base:
            without = dict(base)
            del without[key]
            samples.append(without)
            for value in ODD_VALUES:
                samples.append({**base, key: value})
        for nested in ("sni_probe", "starttls"):
            if isinstance(base.get(nested), dict):
                for key in base[nested]:
                    for value in ODD_VALUES[:16]:
                        samples.append({**base, nested: {**base[nested], key: value}})
        if isinstance(base.get("dns"), dict):
            samples += dns_variants(base)
    return samples


def dns_variants(base: dict[str, Any]) -> list[Any]:
    """``base`` with its DNS facts broken one key at a time, at both levels, and in the
    ways a hostile writer might: an answer that is no object, a list of lists, booleans
    for numbers, an integer written as a float."""
    dns = base["dns"]
    answer = dns["answers"][0]
    variants: list[Any] = []
    for key in dns:
        without = dict(dns)
        del without[key]
        variants.append({**base, "dns": without})
        for value in ODD_VALUES:
            variants.append({**base, "dns": {**dns, key: value}})
    for key in answer:
        without = dict(answer)
        del without[key]
        broken = [without, *dns["answers"][1:]]
        variants.append({**base, "dns": {**dns, "answers": broken}})
        for value in ODD_VALUES:
            changed = [*dns["answers"][:-1], {**answer, key: value}]
            variants.append({**base, "dns": {**dns, "answers": changed}})
    for answers in ([], [None], [[answer]], [answer, "x"], [{**answer, "extra": {"a": 1}}]):
        variants.append({**base, "dns": {**dns, "answers": answers}})
    for key, value in (
        ("elapsed", True),
        ("elapsed", 3),
        ("resolvers", [None]),
        ("resolvers", []),
        ("extra", [1, {"x": None}]),
    ):
        variants.append({**base, "dns": {**dns, key: value}})
    for value in (60.0, 60.5, True, -1, 2**70):
        variants.append({**base, "dns": {**dns, "answers": [{**answer, "ttl": value}]}})
    return variants


def test_fast_line_check_agrees_with_jsonschema() -> None:
    schema = load_schema()
    reference = Draft202012Validator(schema)
    disagreements = []
    valid = 0
    for sample in schema_samples():
        ours = validate_line(sample)
        theirs = reference.is_valid(sample)
        valid += theirs
        if (ours is None) != theirs:
            disagreements.append((sample, ours))
    assert disagreements == []
    assert valid > 3  # the grid holds valid lines as well as broken ones


def test_line_check_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="minimum"):
        line_schema._CheckCompiler({"type": "integer", "minimum": 3}).compile()


def test_the_fast_path_takes_ordinary_lines_and_never_one_jsonschema_refuses() -> None:
    reference = Draft202012Validator(load_schema())
    samples = schema_samples()
    taken = [s for s in samples if line_schema._plain_session(s)]
    without_dns = dataclasses.replace(every_field_set(), dns=None).to_json()
    assert without_dns in taken and session().to_json() in taken
    assert every_field_set().to_json() in taken  # DNS facts too (what the proxy will write)
    assert all(reference.is_valid(s) for s in taken)
    assert len(taken) < len(samples) // 2  # the broken ones go to the full check
    # DNS facts the schema accepts but the fast path leaves to the compiled check: a TTL
    # written as a float, a number that is an integer; both agree with jsonschema above
    dns_lines = dns_variants(every_field_set().to_json())
    assert sum(reference.is_valid(s) for s in dns_lines) > sum(
        line_schema._plain_session(s) for s in dns_lines
    )
    assert any(line_schema._plain_session(s) for s in dns_lines)


def test_dns_facts_read_in_one_pass_only_when_the_schema_accepts_them() -> None:
    reference = Draft202012Validator(load_schema())
    lines = dns_variants(every_field_set().to_json())
    read = [(line, line_schema.plain_dns_facts(line["dns"])) for line in lines]
    taken = [(line, dns) for line, dns in read if dns is not None]
    assert taken and len(taken) < len(lines) // 2
    for line, dns in taken:
        assert reference.is_valid(line)
        assert dns == DnsFacts.from_json(line["dns"])  # as the general reader builds them
    whole = every_field_set()
    assert line_schema.plain_dns_facts(whole.to_json()["dns"]) == whole.dns


@pytest.mark.parametrize(
    ("definition", "change"),
    [
        ("dnsFacts", {"required": ["host", "resolvers"]}),
        ("dnsAnswer", {"required": ["name", "type", "resolver", "data", "ttl"]}),
        ("dnsAnswer", {"additionalProperties": False}),
    ],
)
def test_the_fast_path_is_not_built_for_dns_rules_it_does_not_know(
    definition: str, change: dict[str, Any]
) -> None:
    schema = json.loads(json.dumps(load_schema()))
    schema["$defs"][definition].update(change)
    line_schema._PlainRules(load_schema())  # the shipped schema: built
    with pytest.raises(ValueError, match="dnsFacts"):
        line_schema._PlainRules(schema)


# --- hostile and damaged lines -------------------------------------------------------------


def test_a_record_cut_mid_file_is_a_cut_record_not_an_error(tmp_path: Path) -> None:
    # A proxy killed mid-write, then restarted: it appends after the cut line.
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session(1)])
    cut = json.dumps(session(2).to_json())[:300]  # ends inside the leaf's base64
    with path.open("a") as file:
        file.write(cut + "\n")
    with path.open("a") as file:
        file.write(json.dumps(session(3).to_json()) + "\n")

    result = read_recording(path)

    assert [s.id for s in result.sessions] == ["s1", "s3"]
    (problem,) = result.problems
    assert problem.line == 3 and problem.cut_short and problem.expected
    assert not problem.truncated and not result.partial_last_line
    assert "mid-record" in problem.message


def test_a_malformed_line_mid_file_is_not_taken_for_a_cut_record(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text(header_line() + '{"type":"session","id": oops}\n')
    (problem,) = read_recording(path).problems
    assert not problem.expected
    assert "not valid JSON" in problem.message


def test_a_line_over_the_limit_is_one_problem_and_is_never_held_whole(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "rec.jsonl"
    huge = json.dumps(session(2, sni="a" * (16 * recording.LINE_LIMIT)).to_json())
    path.write_text(
        header_line()
        + json.dumps(session(1).to_json())
        + "\n"
        + huge
        + "\n"
        + json.dumps(session(3).to_json())
        + "\n"
    )
    del huge
    tracemalloc.start()
    try:
        items = list(iter_recording(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [i.id for i in items if isinstance(i, SessionFacts)] == ["s1", "s3"]
    (problem,) = [i for i in items if isinstance(i, LineProblem)]
    assert problem.line == 3 and not problem.expected
    assert "longer than 1 MB" in problem.message
    assert peak < 3 * recording.LINE_LIMIT  # the 16 MB line was read in pieces and dropped


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"sni": "a" * (recording.FIELD_LIMIT + 1)}, "sni"),
        ({"notes": ["x", "b" * (recording.FIELD_LIMIT + 1)]}, "notes[1]"),
        ({"starttls": StartTlsFacts(server_reply="c" * (recording.FIELD_LIMIT + 1))}, "starttls"),
    ],
)
def test_a_field_over_64_kib_is_one_problem(
    tmp_path: Path, changes: dict[str, Any], where: str
) -> None:
    path = tmp_path / "rec.jsonl"
    write_recording(path, [session(1, **changes), session(2)])
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s2"]
    (problem,) = result.problems
    assert problem.message.startswith(where) and "65,536 characters" in problem.message


def test_the_longest_sni_tls_can_carry_is_within_the_field_limit(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    longest = "a" * (2**16 - 1 - 5)  # the extension's length, less its own list and name headers
    write_recording(path, [session(1, sni=longest)])
    (read,) = read_recording(path).sessions
    assert read.sni == longest


def test_a_lone_surrogate_in_a_field_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    line = json.dumps(session(1).to_json()).replace(
        '"sni": "mail.example.org"', '"sni": "\\ud800x.example.test"'
    )
    path.write_text(header_line() + line + "\n" + json.dumps(session(2).to_json()) + "\n")
    result = read_recording(path)
    assert result.problems == []
    assert [s.sni for s in result.sessions] == ["\ud800x.example.test", "mail.example.org"]


def test_a_session_is_built_from_a_line_as_from_json() -> None:
    for data in (every_field_set().to_json(), session().to_json()):
        built = SessionFacts.from_line(json.loads(json.dumps(data)))
        assert built == SessionFacts.from_json(data)
        assert {f.name: getattr(built, f.name) for f in dataclasses.fields(SessionFacts)}


def _json_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_line as it was before orjson: every line read by json alone."""

    def refuse(raw: bytes) -> Any:
        raise recording.orjson.JSONDecodeError("refused for the comparison", "", 0)

    monkeypatch.setattr(recording.orjson, "loads", refuse)


def _tricky_lines() -> list[bytes]:
    """Lines where orjson and json differ, or could: each must read as json reads it."""
    plain = json.dumps(session(1).to_json())
    full = json.dumps(every_field_set().to_json())
    big = 18446744073709551616  # 2**64: orjson reads it as a float
    lines = [
        plain,
        full,
        plain.replace('"sni": "mail.example.org"', '"sni": "\\ud800x.example.test"'),
        plain.replace('"sni": "mail.example.org"', '"sni": NaN'),
        plain.replace('"sni": "mail.example.org"', '"sni": 1e400'),
        full.replace('"client_alert_code": 48', f'"client_alert_code": {big}'),
        full.replace('"client_alert_code": 48', f'"client_alert_code": {big - 1}'),
        full.replace('"client_waited": ', f'"client_waited": {big + 1}, "was": '),
        full.replace('"elapsed": ', f'"elapsed": {-big - 1}, "was": '),
        plain[:-1] + f', "extra": {big}}}',
        plain[:-1] + ', "id": "again"}',  # a repeated key: the last one counts
        plain.replace('"protocol": "imap"', '"protocol": "IMAP"'),
        plain[: len(plain) // 2],
        "\ufeff" + plain,
        "[1, 2]",
        "   ",
        plain + " \r",
    ]
    assert '"client_alert_code": 48' in full
    assert '"client_waited": ' in full and '"elapsed": ' in full
    raw = [line.encode("utf-8", "surrogatepass") for line in lines]
    return [*raw, raw[0].replace(b"mail.example.org", b"mail.ex\xffample.org")]


@pytest.mark.parametrize("index", range(18))
@pytest.mark.parametrize("last", [False, True])
def test_a_line_reads_as_json_reads_it(
    index: int, last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _tricky_lines()[index]
    fast = parse_line("rec.jsonl", 3, raw, last)
    _json_only(monkeypatch)
    assert fast == parse_line("rec.jsonl", 3, raw, last)


def test_orjson_reads_ordinary_lines() -> None:
    """The comparison above means something only if orjson takes the ordinary lines."""
    for data in (session(1).to_json(), every_field_set().to_json()):
        assert recording.orjson.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    ("field", "bad", "words"),
    [
        ("started", "2025-06-01 08:00", "ISO 8601 / RFC 3339 date and time with an explicit"),
        ("chain", ["M!IB"], "one DER-encoded X.509 certificate in standard base64"),
    ],
)
def test_a_value_of_the_wrong_form_is_told_in_the_schemas_words(field, bad, words) -> None:
    data = session(1).to_json()
    data[field] = bad
    problem = validate_line(json.loads(json.dumps(data)))
    assert problem is not None and words in problem, problem
    assert "is not in the expected form" in problem
    assert "[0-9]" not in problem and "[A-Za-z" not in problem, "no regular expression"

"""``certmatch probe`` end to end: real servers (dovecot, aiosmtpd, slapd, nnrpd), real dnsmasq."""

from __future__ import annotations

import json
import socket
import time

import pytest

from certmatch.cli.main import main
from certmatch.core.recording import read_recording
from certmatch.lab.dns_server import Zone, dnsmasq


def probe(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["probe", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def zone_servers(tmp_path_factory):
    """Two resolvers: "inside" with the lab's names, "outside" with a different view."""
    inside = Zone(
        hosts={
            "imap.example.test": ["127.0.0.1"],
            "mail.example.test": ["127.0.0.1"],
            "far.example.test": ["127.0.0.2"],
            "alt.example.test": ["127.0.0.1"],
        },
        cnames={"mailhost.example.test": "imap.example.test"},
        srv=[("_imaps._tcp.example.test", "imap.example.test", 993, 0, 1)],
        mx=[("example.test", "mail.example.test", 10)],
    )
    outside = Zone(
        hosts={"alt.example.test": ["127.0.0.9"], "mailhost.example.test": ["127.0.0.1"]}
    )
    logs = tmp_path_factory.mktemp("dnsmasq-probe")
    with dnsmasq(inside, logs) as a, dnsmasq(outside, logs) as b:
        yield a.address, b.address


def test_implicit_tls_with_and_without_sni(dovecot, pki, capsys, tmp_path):
    record = tmp_path / "probe.jsonl"
    status, out, err = probe(
        capsys,
        "--connect",
        "127.0.0.1",
        f"alt.example.test:{dovecot.imaps_port}",
        "--ca-file",
        str(pki.root_ca),
        "--record",
        str(record),
    )
    assert status == 1, err  # the handshake without SNI gets the default certificate
    lines = out.splitlines()
    assert any("sni=alt.example.test" in line and "✓ match" in line for line in lines), out
    assert any(" sni=- " in line and "no-sni-default-certificate" in line for line in lines), out
    assert "SNI: the certificates differ: with SNI alt.example.test" in out
    assert "DNS:" not in out  # --connect without --resolver asks DNS nothing
    sessions = read_recording(record).sessions
    assert [s.sni for s in sessions] == ["alt.example.test", None]
    assert {s.requested_host_source for s in sessions} == {"option"}
    assert sessions[1].sni_probe is not None and sessions[1].sni_probe.sni == "alt.example.test"
    assert len(sessions[0].chain) == 2  # leaf and intermediate: the whole chain is recorded
    # The header keeps --ca-file, so check judges the file later as the probe did live.
    assert read_recording(record).header.ca_certificates == [pki.root_ca.read_text()]
    assert main(["check", str(record)]) == 1  # the no-SNI session's cause, not unknown-issuer
    later = capsys.readouterr().out
    assert "unknown-issuer" not in later and "✓ match" in later, later


def test_json_is_check_json_of_the_same_sessions(dovecot, pki, capsys, tmp_path):
    record = tmp_path / "probe.jsonl"
    status, out, _ = probe(
        capsys,
        "--json",
        "--connect",
        "127.0.0.1",
        f"imap.example.test:{dovecot.imaps_port}",
        "--ca-file",
        str(pki.root_ca),
        "--record",
        str(record),
    )
    document = json.loads(out)
    assert status == 0
    assert document["summary"]["sessions"] == 2 and document["summary"]["failed"] == 0
    assert main(["check", "--json", "--ca-file", str(pki.root_ca), str(record)]) == 0
    checked = json.loads(capsys.readouterr().out)
    for probed, judged in zip(document["sessions"], checked["sessions"], strict=True):
        probed.pop("recording"), judged.pop("recording")
        # The same anchor; read back, it is also in the recording's header.
        assert "this recording's header" in judged["trust_anchor"].pop("origin")
        probed["trust_anchor"].pop("origin")
        assert probed == judged


@pytest.mark.parametrize(
    ("server", "name", "starttls"),
    [
        ("imap", "imap.example.test", "auto"),
        ("pop3", "pop.example.test", "pop3"),
        ("submission", "smtp.example.test", "smtp"),
        ("ldap", "ldap.example.test", "ldap"),
        ("nntp", "news.example.test", "nntp"),
    ],
)
def test_starttls_dialogues(
    server, name, starttls, dovecot, smtp_server, slapd_factory, nntp_factory, pki, capsys, tmp_path
):
    port = {
        "imap": lambda: dovecot.imap_port,
        "pop3": lambda: dovecot.pop3_port,
        "submission": lambda: smtp_server.submission_port,
        "ldap": lambda: slapd_factory("correct").ldap_port,
        "nntp": lambda: nntp_factory("correct").nntp_port,
    }[server]()
    record = tmp_path / "s.jsonl"
    args = [
        "--connect",
        "127.0.0.1",
        f"{name}:{port}",
        "--ca-file",
        str(pki.root_ca),
        "--record",
        str(record),
    ]
    if server == "imap":
        args += ["--starttls", "imap"]  # the test port is not 143, so auto would try implicit TLS
    else:
        args += ["--starttls", starttls]
    status, out, err = probe(capsys, *args)
    assert status == 0, out + err
    sessions = read_recording(record).sessions
    assert all(s.tls_kind == "starttls" and s.starttls.phase == "accepted" for s in sessions)
    assert all(s.starttls.client_requested for s in sessions)
    # --starttls smtp on a port that is not 465/587 speaks SMTP, and is labelled so
    assert sessions[0].protocol == ("smtp" if server == "submission" else server)


def test_unreachable_server_is_one_line_in_bounded_time(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    status, out, err = probe(
        capsys, "--connect", "127.0.0.1", f"imap.example.test:{port}", "--timeout", "2"
    )
    assert time.monotonic() - started < 3
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "connection refused" in err and "check the port" in err


def test_a_plaintext_port_without_starttls_is_one_line(dovecot, capsys):
    status, _out, err = probe(
        capsys,
        "--connect",
        "127.0.0.1",
        f"imap.example.test:{dovecot.imap_port}",
        "--starttls",
        "none",
    )
    assert status == 1 and err.count("\n") == 1
    assert "does not speak TLS from the first byte" in err and "--starttls" in err


def test_a_server_that_never_answers_is_cut_off(capsys):
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        started = time.monotonic()
        status, _, err = probe(
            capsys,
            "--connect",
            "127.0.0.1",
            f"imap.example.test:{port}",
            "--starttls",
            "imap",
            "--timeout",
            "1",
        )
        assert time.monotonic() - started < 2.5
        assert status == 1 and "within 1 s (during the imap STARTTLS dialogue)" in err
    finally:
        listener.close()


def test_usage_errors(capsys):
    assert probe(capsys, "--connect", "mail.example.test", "imap.example.test")[0] == 2
    status, _, err = probe(capsys, "imap.example.test:99999")
    assert status == 2 and "port must be a number" in err
    status, _, err = probe(capsys, "--resolver", "dns.example.test", "imap.example.test")
    assert status == 2 and "is not an IP address" in err


def test_a_name_dns_does_not_know(zone_servers, capsys):
    inside, _ = zone_servers
    status, out, err = probe(capsys, "--resolver", inside, "nothere.example.test:993")
    assert status == 2 and out == ""
    assert (
        "nothere.example.test has no address in DNS" in err
        and "nxdomain" in err
        and "--connect" in err
    )


def test_a_name_only_the_hosts_file_knows_is_pointed_to_connect(zone_servers, capsys):
    """DNS has no localhost, the hosts file has: the error says so and gives --connect."""
    inside, _ = zone_servers
    status, out, err = probe(capsys, "--resolver", inside, "localhost:993")
    assert status == 2 and out == ""
    assert "localhost has no address in DNS" in err and "hosts file" in err
    assert "--connect 127.0.0.1" in err or "--connect ::1" in err


def test_cname_alias_through_real_dns(zone_servers, dovecot, pki, capsys, tmp_path):
    inside, _ = zone_servers
    record = tmp_path / "alias.jsonl"
    status, out, err = probe(
        capsys,
        "--resolver",
        inside,
        f"mailhost.example.test:{dovecot.imaps_port}",
        "--ca-file",
        str(pki.root_ca),
        "--record",
        str(record),
    )
    assert status == 1, err
    assert "mailhost.example.test → CNAME imap.example.test → 127.0.0.1" in out
    # the alias is each line's primary cause, so no DNS line repeats it
    assert [line.split()[-1] for line in out.splitlines() if " sni=" in line] == [
        "cname-alias",
        "cname-alias",
    ]
    assert "DNS: cname-alias" not in out
    assert "SRV _imaps._tcp.example.test → imap.example.test:993" in out
    assert "MX example.test → mail.example.test" in out
    raw = [json.loads(line) for line in record.read_text().splitlines()[1:]]
    assert raw[0]["dns"]["host"] == "mailhost.example.test"  # the DNS facts travel with the session
    capsys.readouterr()
    # check re-judges the recorded DNS facts: the alias is the cause, the three names shown
    assert main(["check", "--explain", "--ca-file", str(pki.root_ca), str(record)]) == 1
    out = capsys.readouterr().out
    assert "cname-alias" in out and "name-not-in-certificate" not in out
    assert "client:      mailhost.example.test (option)" in out
    assert "DNS:         mailhost.example.test → CNAME imap.example.test → 127.0.0.1" in out
    status, out, err = probe(
        capsys,
        "--json",
        "--resolver",
        inside,
        f"mailhost.example.test:{dovecot.imaps_port}",
        "--ca-file",
        str(pki.root_ca),
    )
    sessions = json.loads(out)["sessions"]
    assert status == 1 and sessions, err
    for session in sessions:  # probe --json carries the DNS part, and its causes
        assert session["dns"]["host"] == "mailhost.example.test"
        assert session["dns"]["resolvers"] == [inside]
        assert session["primary_cause"] == "cname-alias"


def test_dns_points_elsewhere_and_split_horizon(zone_servers, dovecot, pki, capsys):
    inside, outside = zone_servers
    _, out, _ = probe(
        capsys,
        "--resolver",
        inside,
        "--connect",
        "127.0.0.1",
        f"far.example.test:{dovecot.imaps_port}",
        "--ca-file",
        str(pki.root_ca),
    )
    # a warning behind each line's primary cause: one DNS line says it, once
    assert "DNS: dns-points-elsewhere: The server reached, 127.0.0.1, is not among" in out
    assert out.count("DNS: dns-points-elsewhere") == 1
    assert "dns-points-elsewhere" not in " ".join(l for l in out.splitlines() if " sni=" in l)
    _, out, _ = probe(
        capsys,
        "--resolver",
        inside,
        "--resolver",
        outside,
        f"alt.example.test:{dovecot.imaps_port}",
        "--ca-file",
        str(pki.root_ca),
    )
    assert f"127.0.0.1 ({inside}" in out and f"127.0.0.9 ({outside}" in out
    assert "dns-points-elsewhere" not in out  # 127.0.0.1 is one resolver's answer


def test_a_silent_resolver_does_not_hold_the_probe(dovecot, pki, capsys):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        started = time.monotonic()
        status, out, _ = probe(
            capsys,
            "--resolver",
            f"127.0.0.1:{silent.getsockname()[1]}",
            "--connect",
            "127.0.0.1",
            f"imap.example.test:{dovecot.imaps_port}",
            "--ca-file",
            str(pki.root_ca),
            "--timeout",
            "1",
        )
        assert time.monotonic() - started < 3
        assert status == 0 and "no answer (timeout)" in out
    finally:
        silent.close()


def test_a_silent_resolver_and_no_address_is_one_line(capsys):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        started = time.monotonic()
        status, out, err = probe(
            capsys,
            "--resolver",
            f"127.0.0.1:{silent.getsockname()[1]}",
            "imap.example.test",
            "--timeout",
            "1",
        )
        assert time.monotonic() - started < 3
        assert status == 2 and out == "" and err.count("\n") == 1
        assert "imap.example.test has no address in DNS" in err and "timeout" in err
    finally:
        silent.close()

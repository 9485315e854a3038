"""``certmatch probe --mail-domain`` and ``-f`` end to end: dnsmasq, dovecot, aiosmtpd, and an
autoconfig file served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

import pytest

from certmatch.cli.main import main
from certmatch.core.recording import read_recording
from certmatch.lab.dns_server import Zone, dnsmasq
from certmatch.net.discovery import fetch_autoconfig


@pytest.fixture(scope="module")
def domain_dns(dovecot, smtp_server, tmp_path_factory):
    """example.test with SRV records (one pointing at a name its wildcard cannot cover), an
    MX, the usual names, and a CNAME alias among them."""
    zone = Zone(
        hosts={
            name: ["127.0.0.1"]
            for name in (
                "imap.example.test",
                "pop.example.test",
                "smtp.example.test",
                "mail.example.test",
                "a.b.example.test",
                "example.test",
            )
        },
        cnames={"pop3.example.test": "pop.example.test"},
        mx=[("example.test", "mail.example.test", 10)],
        srv=[
            ("_imaps._tcp.example.test", "imap.example.test", dovecot.imaps_port, 0, 1),
            ("_pop3s._tcp.example.test", "a.b.example.test", dovecot.pop3s_port, 0, 1),
            (
                "_submission._tcp.example.test",
                "smtp.example.test",
                smtp_server.submission_port,
                0,
                1,
            ),
        ],
    )
    with dnsmasq(zone, tmp_path_factory.mktemp("dnsmasq-domain")) as server:
        yield server.address


def domain_args(dovecot, smtp_server, pki, resolver, *extra):
    return [
        "probe",
        "--mail-domain",
        "example.test",
        "--resolver",
        resolver,
        "--services",
        "imaps,pop3s,submission",
        "--port",
        f"imaps={dovecot.imaps_port}",
        "--port",
        f"pop3s={dovecot.pop3s_port}",
        "--port",
        f"submission={smtp_server.submission_port}",
        "--ca-file",
        str(pki.root_ca),
        *extra,
    ]


def test_mail_domain_names_the_right_server_for_each_service(
    domain_dns, dovecot, smtp_server, pki, capsys, tmp_path
):
    record = tmp_path / "domain.jsonl"
    status = main(domain_args(dovecot, smtp_server, pki, domain_dns, "--record", str(record)))
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.splitlines()

    def head(service):
        return next(line for line in lines if line.startswith(f"{service} ("))

    assert (
        f"configure imap.example.test, port {dovecot.imaps_port} (SRV _imaps._tcp.example.test)"
        in head("imaps")
    )
    # the SRV target a.b.example.test is beyond the wildcard's reach: the usual name wins
    assert f"configure pop.example.test, port {dovecot.pop3s_port} (usual name (pop.))" in head(
        "pop3s"
    )
    assert "configure smtp.example.test" in head("submission") and "SRV _submission._tcp" in head(
        "submission"
    )
    pop_rows = [
        line for line in lines if f":{dovecot.pop3s_port} " in line and "DNS: SRV" not in line
    ]
    srv_row = next(line for line in pop_rows if "a.b.example.test" in line)
    assert "wildcard-too-deep" in srv_row and "srv-target-not-in-certificate" in srv_row
    assert not any("; DNS:" in line for line in lines)  # DNS causes are causes, in their order
    alias_row = next(line for line in pop_rows if "pop3.example.test" in line)
    assert "✗ mismatch" in alias_row and "cname-alias" in alias_row
    domain_row = next(
        line for line in lines if line.lstrip().startswith("✗") and " example.test:" in line
    )
    assert "the mail domain" in domain_row
    assert "DNS: MX example.test → mail.example.test" in out
    sessions = read_recording(record).sessions
    assert {s.requested_host_source for s in sessions} == {"option"}
    assert all(s.sni == s.requested_host for s in sessions)


def test_mail_domain_json(domain_dns, dovecot, smtp_server, pki, capsys):
    status = main(domain_args(dovecot, smtp_server, pki, domain_dns, "--json"))
    document = json.loads(capsys.readouterr().out)
    assert status == 0
    configure = {s["service"]: s["configure"] for s in document["services"]}
    assert configure["imaps"]["name"] == "imap.example.test"
    assert configure["pop3s"]["name"] == "pop.example.test"
    pop = next(s for s in document["services"] if s["service"] == "pop3s")
    srv = next(c for c in pop["candidates"] if c["name"] == "a.b.example.test")
    assert srv["source"] == "srv" and not srv["works"] and "wildcard-too-deep" in srv["causes"]
    assert "srv-target-not-in-certificate" in srv["causes"]
    assert "a.b.example.test" in srv["dns"]["srv-target-not-in-certificate"]


class _Autoconfig(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_autoconfig_over_http_on_loopback(domain_dns, dovecot, smtp_server, pki, capsys):
    _Autoconfig.body = f"""<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="example.test">
  <incomingServer type="imap"><hostname>mail.%EMAILDOMAIN%</hostname><port>{dovecot.imaps_port}</port>
    <socketType>SSL</socketType></incomingServer>
</emailProvider></clientConfig>""".encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Autoconfig)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mail/config-v1.1.xml"
        status = main(domain_args(dovecot, smtp_server, pki, domain_dns, "--autoconfig", url))
        out = capsys.readouterr().out
    finally:
        server.shutdown()
        server.server_close()
    assert status == 0
    assert f"autoconfig: imaps → mail.example.test:{dovecot.imaps_port}" in out
    assert any(
        "mail.example.test" in line and "autoconfig" in line and "✓" in line
        for line in out.splitlines()
    )


def test_usage_errors_for_the_domain_mode(capsys):
    assert main(["probe", "--mail-domain", "example.test", "--services", "imaps,gopher"]) == 2
    assert "unknown service(s) gopher" in capsys.readouterr().err
    assert main(["probe", "--mail-domain", "example.test", "--port", "imaps=x"]) == 2
    assert main(["probe", "--mail-domain", "example.test", "imap.example.test"]) == 2
    assert "give one of" in capsys.readouterr().err


def test_many_targets_from_a_file(dovecot, smtp_server, pki, capsys, tmp_path):
    listing = tmp_path / "targets.txt"
    listing.write_text(
        "# the lab's servers\n"
        f"127.0.0.1:{dovecot.imaps_port}\n"
        f"127.0.0.1:{dovecot.pop3s_port}\n\n"
        f"127.0.0.1:{smtp_server.smtps_port}   # SMTPS\n"
    )
    status = main(["probe", "-f", str(listing), "--ca-file", str(pki.root_ca), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["summary"]["sessions"] == 3  # an IP address gets one handshake, without SNI
    assert status == 1  # asked by address, the certificates name hosts: ip-not-in-certificate
    assert {s["requested_host"] for s in document["sessions"]} == {"127.0.0.1"}
    listing.write_text("imap.example.test:99999\n")
    assert main(["probe", "-f", str(listing)]) == 2
    assert f"{listing}:1:" in capsys.readouterr().err


def test_an_autoconfig_body_that_arrives_after_its_headers_is_read_whole():
    """A server may send its headers and its body in separate segments: read to the close."""
    body = (
        b'<?xml version="1.0"?><clientConfig version="1.1"><emailProvider id="example.test">'
        b'<incomingServer type="imap"><hostname>imap.%EMAILDOMAIN%</hostname><port>993</port>'
        b"<socketType>SSL</socketType></incomingServer></emailProvider></clientConfig>"
    )

    async def scenario():
        async def answer(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.3)  # the body comes later, in a segment of its own
            writer.write(body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await fetch_autoconfig(
                f"http://127.0.0.1:{port}/mail/config-v1.1.xml", "example.test"
            )

    servers, error = asyncio.run(scenario())
    assert error is None
    assert [(s.service, s.name, s.port) for s in servers] == [("imaps", "imap.example.test", 993)]

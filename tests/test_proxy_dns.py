"""DNS facts in the proxy (issue 11): real dnsmasq resolvers, real clients, real dovecot.

The proxy asks DNS in the background when a session's requested host is known and joins
the answers to the session's record; ``check`` then judges them. The mail session never
waits for DNS: a resolver that never answers delays only the record.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons
from proxy_fixtures import free_port, inprocess_proxy, mitmdump_process, s_client_speaking
from servers.clients import LoopbackIMAP4_SSL

from certmatch.cli.main import main
from certmatch.core.recording import read_recording
from certmatch.lab.dns_server import Zone, dnsmasq
from certmatch.proxy.capture import CertmatchCapture
from certmatch.proxy.session_dns import wants_dns

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def resolvers(tmp_path_factory):
    """Two views of DNS: "inside" makes mailhost an alias of imap (which the default
    certificate names), "outside" gives mailhost an address of its own."""
    inside = Zone(
        hosts={"imap.example.test": ["127.0.0.1"], "mail.example.test": ["127.0.0.1"]},
        cnames={"mailhost.example.test": "imap.example.test"},
        srv=[("_imaps._tcp.example.test", "imap.example.test", 993, 0, 1)],
        mx=[("example.test", "mail.example.test", 10)],
    )
    outside = Zone(hosts={"mailhost.example.test": ["127.0.0.1"]})
    logs = tmp_path_factory.mktemp("dnsmasq-proxy")
    with dnsmasq(inside, logs) as a, dnsmasq(outside, logs) as b:
        yield a.address, b.address


def check_json(capsys, record, ca) -> dict:
    capsys.readouterr()
    main(["check", "--json", "--ca-file", str(ca), str(record)])
    return json.loads(capsys.readouterr().out)


def causes_of(session: dict) -> set[str]:
    return {finding["id"] for finding in session["findings"]}


def test_cname_alias_and_split_horizon_through_certmatch_proxy(
    resolvers, dovecot, pki, tmp_path, capsys
):
    """``certmatch proxy`` as a user runs it, resolvers given with --set; s_client asks for
    the alias; ``check --json`` names the DNS causes."""
    inside, outside = resolvers
    port, record = free_port(), tmp_path / "dns.jsonl"
    argv = [sys.executable, "-m", "certmatch", "proxy", "--record", str(record)]
    argv += ["--mode", f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"]
    argv += ["--listen-port", str(port), "--confdir", str(tmp_path / "conf")]
    argv += ["--ca-file", str(pki.root_ca)]
    argv += [
        "--",
        "--set",
        f"certmatch_resolver={inside}",
        "--set",
        f"certmatch_resolver={outside}",
    ]
    with mitmdump_process(tmp_path, argv, port=port):
        s_client_speaking(port, servername="mailhost.example.test")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if record.exists() and read_recording(record).sessions:
                break
            time.sleep(0.1)
    facts = read_recording(record).sessions[0]
    assert facts.requested_host == "mailhost.example.test"
    assert facts.dns is not None, (tmp_path / "proxy.log").read_text()
    assert facts.dns.resolvers == [inside, outside]
    assert facts.dns.cname_chain(inside, "mailhost.example.test") == [
        "mailhost.example.test",
        "imap.example.test",
    ]
    assert facts.dns.server_ip == "127.0.0.1"
    assert facts.dns.mail_domain == "example.test"
    assert {srv.target for srv in facts.dns.srv()} == {"imap.example.test"}
    document = check_json(capsys, record, pki.root_ca)
    (session,) = document["sessions"]
    assert {"cname-alias", "split-horizon"} <= causes_of(session), session
    assert "name-not-in-certificate" not in causes_of(session)  # the DNS causes explain it


def test_no_dns_records_no_dns_facts(resolvers, dovecot, pki, tmp_path):
    inside, _ = resolvers
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path, mode, ca_file=[str(pki.root_ca)], resolver=[inside], dns=False
    ) as proxy:
        s_client_speaking(proxy.port, servername="mailhost.example.test")
        (facts,) = proxy.sessions(1)
    assert facts.dns is None and facts.requested_host == "mailhost.example.test"


def test_a_silent_resolver_delays_the_record_not_the_session(dovecot, pki, tmp_path, capsys):
    """A resolver that never answers: the client's session runs at full speed; the record
    follows once each question has timed out, with those timeouts as its DNS facts."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    resolver = f"127.0.0.1:{silent.getsockname()[1]}"
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    try:
        with inprocess_proxy(
            tmp_path, mode, ca_file=[str(pki.root_ca)], resolver=[resolver]
        ) as proxy:
            started = time.monotonic()
            context = ssl.create_default_context(cafile=str(proxy.ca_file))
            client = LoopbackIMAP4_SSL("imap.example.test", proxy.port, ssl_context=context)
            client.login(dovecot.user, dovecot.password)
            client.logout()
            session_s = time.monotonic() - started
            assert proxy.addon is not None and proxy.addon.dns is not None
            question_timeout = proxy.addon.dns.lookup.timeout
            (facts,) = proxy.sessions(1, timeout=10)
            recorded_s = time.monotonic() - started
    finally:
        silent.close()
    assert session_s < question_timeout, "the session waited for DNS"
    assert recorded_s >= question_timeout  # the record waited for the answers' timeouts
    assert facts.dns is not None and facts.dns.answers
    assert {a.error for a in facts.dns.answers} == {"timeout"}
    assert facts.client_decision == "went-on"
    (session,) = check_json(capsys, proxy.record, pki.root_ca)["sessions"]
    assert session["verdict"] == "match", session  # unanswered questions decide nothing


def test_a_bad_resolver_option_is_one_clear_error():
    addon = CertmatchCapture()
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError) as raised:
        tctx.configure(addon, certmatch_resolver=["dns.example.test"])
    message = str(raised.value)
    assert message.startswith("certmatch_resolver:") and "not an IP address" in message
    assert "\n" not in message


@pytest.mark.pure
@pytest.mark.parametrize(
    ("host", "given", "reverse_to_address", "asked"),
    [
        ("imap.example.test", False, False, True),  # forward modes: the client's own name
        ("imap.example.test", False, True, False),  # reverse to an IP: configured, not resolved
        ("imap.example.test", True, True, True),  # unless resolvers were given
        ("192.0.2.1", True, False, False),  # an address is not asked about
        (None, True, False, False),
    ],
)
def test_which_sessions_ask_dns(host, given, reverse_to_address, asked):
    assert wants_dns(host, resolvers_given=given, reverse_to_address=reverse_to_address) is asked

"""The pure parts of ``certmatch probe``: targets, ports and dialogues, candidates, autoconfig."""

from __future__ import annotations

import pytest

from certmatch.core.discovery import Candidate, candidates, parse_services, recommend
from certmatch.core.dns_facts import DnsAnswer, DnsFacts
from certmatch.core.probe_plan import Plan, Target, parse_target, plan_for
from certmatch.net.discovery import parse_autoconfig

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("imap.example.com", Target("imap.example.com")),
        ("imap.example.com:143", Target("imap.example.com", 143)),
        ("imap.example.com.", Target("imap.example.com")),
        ("192.0.2.1:993", Target("192.0.2.1", 993)),
        ("[2001:db8::1]:993", Target("2001:db8::1", 993)),
        ("2001:db8::1", Target("2001:db8::1")),
    ],
)
def test_targets(text, target):
    assert parse_target(text) == target


@pytest.mark.parametrize(
    "text", ["", "imap.example.com:0", "host:http", "[::1", "user@example.com", "a b"]
)
def test_bad_targets(text):
    with pytest.raises(ValueError):
        parse_target(text)


@pytest.mark.parametrize(
    ("target", "starttls", "plan"),
    [
        ("h", "auto", Plan(993, "imap", None)),
        ("h:143", "auto", Plan(143, "imap", "imap")),
        ("h:587", "auto", Plan(587, "submission", "submission")),
        ("h:465", "auto", Plan(465, "submission", None)),
        ("h:25", "auto", Plan(25, "smtp", "smtp")),
        ("h:389", "auto", Plan(389, "ldap", "ldap")),
        ("h:119", "auto", Plan(119, "nntp", "nntp")),
        ("h:12345", "auto", Plan(12345, "unknown", None)),
        ("h", "smtp", Plan(587, "submission", "submission")),
        ("h:2525", "smtp", Plan(2525, "smtp", "smtp")),
        ("h:143", "none", Plan(143, "imap", None)),
        ("h", "pop3", Plan(110, "pop3", "pop3")),
    ],
)
def test_port_and_dialogue(target, starttls, plan):
    assert plan_for(parse_target(target), starttls) == plan


def test_services():
    assert parse_services("imaps, submission") == ("imaps", "submission")
    assert "nntps" in parse_services("all")
    with pytest.raises(ValueError, match="gopher"):
        parse_services("imaps,gopher")


R = "127.0.0.1:53"
FACTS = DnsFacts(
    host="example.com",
    resolvers=[R],
    mail_domain="example.com",
    answers=[
        DnsAnswer(
            "_imaps._tcp.example.com",
            "SRV",
            R,
            ("10 1 993 imap2.hoster.net", "0 1 9993 imap.hoster.net"),
            60,
        ),
        DnsAnswer("_pop3s._tcp.example.com", "SRV", R, ("0 0 1 .",), 60),
        DnsAnswer("example.com", "MX", R, ("10 mx.hoster.net",), 60),
    ],
)


def test_candidates_in_the_order_a_client_should_prefer_them():
    listed = candidates("example.com", FACTS, ("imaps", "pop3s", "smtp"))
    imaps = [(c.name, c.port, c.source) for c in listed if c.service == "imaps"]
    assert imaps[:2] == [("imap.hoster.net", 9993, "srv"), ("imap2.hoster.net", 993, "srv")]
    assert imaps[2:4] == [("imap.example.com", 993, "usual"), ("mail.example.com", 993, "usual")]
    assert imaps[-1] == ("example.com", 993, "domain")
    names = [c.name for c in listed if c.service == "imaps"]
    assert names.index("mx.hoster.net") > names.index("mail.example.com")  # MX is not for IMAP
    pop3s = [c for c in listed if c.service == "pop3s"]
    assert not [c for c in pop3s if "_pop3s" in c.evidence]  # ".": not offered, no candidate
    smtp = [c.name for c in listed if c.service == "smtp"]
    assert smtp.index("mx.hoster.net") < smtp.index("smtp.example.com")


def test_ports_override_and_no_dns():
    listed = candidates("example.com", None, ("imaps",), ports={"imaps": 10993})
    assert {c.port for c in listed} == {10993}
    assert [c.name for c in listed] == ["imap.example.com", "mail.example.com", "example.com"]


def test_recommend_the_best_that_worked():
    a = Candidate("imaps", "a.example.com", 993, "srv", "SRV", (0, 0))
    b = Candidate("imaps", "b.example.com", 993, "usual", "usual", (3, 0))
    c = Candidate("pop3s", "c.example.com", 995, "usual", "usual", (3, 0))
    assert recommend([(b, True), (a, False), (c, False)]) == {"imaps": b, "pop3s": None}
    assert recommend([(b, True), (a, True)])["imaps"] == a


def test_autoconfig_file():
    body = b"""<?xml version="1.0"?><clientConfig version="1.1"><emailProvider id="example.com">
      <incomingServer type="imap"><hostname>imap.%EMAILDOMAIN%</hostname><port>993</port><socketType>SSL</socketType></incomingServer>
      <incomingServer type="pop3"><hostname>pop.example.com</hostname><port>110</port><socketType>STARTTLS</socketType></incomingServer>
      <incomingServer type="imap"><hostname>plain.example.com</hostname><port>143</port><socketType>plain</socketType></incomingServer>
      <outgoingServer type="smtp"><hostname>smtp.example.com</hostname><port>465</port><socketType>SSL</socketType></outgoingServer>
    </emailProvider></clientConfig>"""
    servers, error = parse_autoconfig(body, "example.com")
    assert error is None
    assert [(s.service, s.name, s.port) for s in servers] == [
        ("imaps", "imap.example.com", 993),
        ("pop3", "pop.example.com", 110),
        ("submissions", "smtp.example.com", 465),
    ]
    assert parse_autoconfig(b"<x", "example.com")[1].startswith("the autoconfig file is not XML")
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    assert "DTD" in parse_autoconfig(bomb, "example.com")[1]

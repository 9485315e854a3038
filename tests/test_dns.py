"""DNS evidence against a real DNS server: dnsmasq on loopback, two of them for split horizon.

The look-ups go through dnspython to dnsmasq; nothing is faked. The pure parts (the
``--resolver`` syntax, the facts' JSON) are marked ``pure``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time

import pytest

from certmatch.core.dns_facts import NXDOMAIN, TIMEOUT, DnsAnswer, DnsFacts, SrvRecord
from certmatch.lab.dns_server import Zone, dnsmasq
from certmatch.net.dns import DnsLookup, Resolver, parse_resolver

INSIDE = Zone(
    hosts={
        "imap.example.test": ["127.0.0.1"],
        "mail.example.test": ["127.0.0.1", "::1"],
        "mx1.example.test": ["127.0.0.1"],
        "smtp.example.test": ["127.0.0.1"],
        "internal.corp.test": ["127.0.0.1"],
    },
    cnames={
        "mailhost.example.test": "imap.example.test",
        "alias2.example.test": "mailhost.example.test",
    },
    mx=[("example.test", "mx1.example.test", 10), ("example.test", "mail.example.test", 20)],
    srv=[
        ("_imaps._tcp.example.test", "imap.example.test", 993, 0, 1),
        ("_submission._tcp.example.test", "smtp.example.test", 587, 0, 1),
        ("_pop3._tcp.example.test", "", 0, 0, 0),
    ],
    ptr={"127.0.0.1": "server.example.test"},
    ttl=300,
)

# The same names seen from outside: imap is elsewhere, and mailhost is no alias there.
OUTSIDE = Zone(
    hosts={"imap.example.test": ["127.0.0.2"], "mailhost.example.test": ["127.0.0.3"]},
    ttl=120,
)


@pytest.fixture(scope="module")
def resolvers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("dnsmasq")
    with dnsmasq(INSIDE, logs) as inside, dnsmasq(OUTSIDE, logs) as outside:
        yield parse_resolver(inside.address), parse_resolver(outside.address)


def gather(resolvers, host, **kwargs) -> DnsFacts:
    return asyncio.run(DnsLookup(resolvers, timeout=2.0).gather(host, **kwargs))


def test_cname_chain_addresses_ptr_mx_and_srv(resolvers):
    inside, _ = resolvers
    facts = gather([inside], "alias2.example.test", server_ip="127.0.0.1")
    r = str(inside)
    assert facts.resolvers == [r]
    assert facts.cname_chain(r) == [
        "alias2.example.test",
        "mailhost.example.test",
        "imap.example.test",
    ]
    assert facts.addresses(r) == ("127.0.0.1",)
    assert facts.ptr_names() == ("server.example.test",)
    assert facts.mail_domain == "example.test"
    assert [(m.preference, m.exchange) for m in facts.mx()] == [
        (10, "mx1.example.test"),
        (20, "mail.example.test"),
    ]
    imaps = facts.srv("_imaps._tcp")
    assert imaps == (SrvRecord("_imaps._tcp", "example.test", 0, 1, 993, "imap.example.test"),)
    assert facts.srv("_pop3._tcp")[0].target == ""  # "." : decidedly not available
    assert facts.srv("_imap._tcp") == ()
    # every answer names its resolver and carries the zone's TTL
    assert {a.resolver for a in facts.answers} == {r}
    assert all(a.ttl == 300 for a in facts.answers if a.data)


def test_ipv4_and_ipv6_addresses(resolvers):
    inside, _ = resolvers
    facts = gather([inside], "mail.example.test")
    assert set(facts.addresses(str(inside))) == {"127.0.0.1", "::1"}


def test_two_resolvers_answer_differently(resolvers):
    inside, outside = resolvers
    facts = gather([inside, outside], "mailhost.example.test")
    assert facts.cname_chain(str(inside))[-1] == "imap.example.test"
    assert facts.addresses(str(inside)) == ("127.0.0.1",)
    assert facts.cname_chain(str(outside)) == ["mailhost.example.test"]
    assert facts.addresses(str(outside)) == ("127.0.0.3",)
    assert facts.all_addresses() == {"127.0.0.1", "127.0.0.3"}


def test_a_name_that_does_not_exist(resolvers):
    inside, _ = resolvers
    facts = gather([inside], "nothere.example.test", mail_domain=False)
    assert facts.addresses(str(inside)) == ()
    assert facts.host_error(str(inside)) == NXDOMAIN
    assert facts.mail_domain is None and facts.mx() == ()


def test_the_host_itself_is_the_mail_domain_when_it_has_mx(resolvers):
    inside, _ = resolvers
    facts = gather([inside], "example.test")
    assert facts.mail_domain == "example.test"
    assert facts.mx()[0].exchange == "mx1.example.test"


def test_answers_are_cached_for_their_ttl(resolvers, tmp_path):
    inside, _ = resolvers

    async def twice():
        lookup = DnsLookup([inside], timeout=2.0)
        first = await lookup.query("imap.example.test", "A", inside)
        again = await lookup.query("imap.example.test", "A", inside)
        return first, again, len(lookup._cache)

    first, again, cached = asyncio.run(twice())
    assert first is again and cached == 1


def test_a_silent_resolver_times_out_in_bounded_time():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives, never answers
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        port = silent.getsockname()[1]
        started = time.monotonic()
        facts = asyncio.run(
            DnsLookup([Resolver("127.0.0.1", port)], timeout=0.5).gather("imap.example.test")
        )
        assert time.monotonic() - started < 2.0
        errors = {a.error for a in facts.answers}
        assert errors == {TIMEOUT}
        assert facts.addresses(f"127.0.0.1:{port}") == ()
    finally:
        silent.close()
        tcp.close()


def test_a_dead_resolver_port_is_an_answer_not_an_exception():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    facts = asyncio.run(
        DnsLookup([Resolver("127.0.0.1", port)], timeout=0.5).gather("x.example.test")
    )
    assert facts.answers and all(a.error for a in facts.answers)


@pytest.mark.pure
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1:53"),
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("[::1]:53", "[::1]:53"),
        ("[::1]", "[::1]:53"),
        ("::1", "[::1]:53"),
        ("[2001:db8::1]:5300", "[2001:db8::1]:5300"),
    ],
)
def test_resolver_syntax(text, expected):
    assert str(parse_resolver(text)) == expected


@pytest.mark.pure
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("dns.example.com", "is not an IP address"),
        ("127.0.0.1:0", "port must be a number"),
        ("127.0.0.1:99999", "port must be a number"),
        ("[::1", "has no ]"),
        ("[::1]x", "expected :PORT"),
    ],
)
def test_bad_resolver_is_one_clear_sentence(text, says):
    with pytest.raises(ValueError, match=says):
        parse_resolver(text)


@pytest.mark.pure
def test_facts_round_trip_through_json():
    facts = DnsFacts(
        host="alias.example.test",
        resolvers=["127.0.0.1:53"],
        server_ip="127.0.0.1",
        mail_domain="example.test",
        answers=[
            DnsAnswer("alias.example.test", "CNAME", "127.0.0.1:53", ("imap.example.test",), 60),
            DnsAnswer("imap.example.test", "A", "127.0.0.1:53", ("127.0.0.1",), 60),
            DnsAnswer(
                "_imaps._tcp.example.test",
                "SRV",
                "127.0.0.1:53",
                ("0 1 993 imap.example.test",),
                60,
            ),
            DnsAnswer("example.test", "MX", "127.0.0.1:53", error=NXDOMAIN),
        ],
        started="2026-01-01T00:00:00+00:00",
        elapsed=0.01,
    )
    import json

    again = DnsFacts.from_json(json.loads(json.dumps(facts.to_json())))
    assert again == facts
    assert again.cname_chain("127.0.0.1:53") == ["alias.example.test", "imap.example.test"]
    assert again.srv()[0].port == 993


@pytest.mark.pure
def test_a_cname_loop_ends_the_chain():
    facts = DnsFacts(
        host="a.example.test",
        resolvers=["r"],
        answers=[
            DnsAnswer("a.example.test", "CNAME", "r", ("b.example.test",), 1),
            DnsAnswer("b.example.test", "CNAME", "r", ("a.example.test",), 1),
        ],
    )
    assert facts.cname_chain("r") == ["a.example.test", "b.example.test"]
    assert facts.addresses("r") == ()


@pytest.mark.pure
def test_the_verdict_view_drops_timing_and_ttls():
    one = DnsFacts(
        host="a.example.test",
        resolvers=["r"],
        answers=[DnsAnswer("a.example.test", "A", "r", ("192.0.2.1",), 60)],
        started="2026-01-01T00:00:00+00:00",
        elapsed=0.2,
    )
    two = DnsFacts(
        host="a.example.test",
        resolvers=["r"],
        answers=[DnsAnswer("a.example.test", "A", "r", ("192.0.2.1",), 17)],
        started="2026-02-02T00:00:00+00:00",
        elapsed=0.01,
    )
    assert one != two and one.verdict_view() == two.verdict_view()
    three = DnsFacts(
        host="a.example.test",
        resolvers=["r"],
        answers=[DnsAnswer("a.example.test", "A", "r", ("192.0.2.2",), 60)],
    )
    assert three.verdict_view() != one.verdict_view()
    # the judge's cheap key says the same as the view, without building it
    assert one.verdict_key() == two.verdict_key() != three.verdict_key()
    reordered = DnsFacts(
        host="a.example.test",
        resolvers=["r"],
        answers=[
            DnsAnswer("a.example.test", "AAAA", "r", error="no-data"),
            DnsAnswer("a.example.test", "A", "r", ("192.0.2.1",), 5),
        ],
    )
    backwards = DnsFacts(
        host="a.example.test", resolvers=["r"], answers=list(reversed(reordered.answers))
    )
    assert reordered.verdict_view() == backwards.verdict_view()
    # answers in another order: another key (a judgement made again, never a wrong one)
    assert reordered.verdict_key() != backwards.verdict_key()
    assert reordered.verdict_key() != one.verdict_key()
    ttl_only = DnsFacts(
        host="a.example.test",
        resolvers=["r"],
        answers=[dataclasses.replace(a, ttl=1) for a in reordered.answers],
    )
    assert ttl_only.verdict_key() == reordered.verdict_key()
    other_resolver = DnsFacts(host="a.example.test", resolvers=["s"], answers=one.answers)
    assert other_resolver.verdict_key() != one.verdict_key()


@pytest.mark.pure
def test_to_json_writes_every_field_in_declaration_order():
    answer = DnsAnswer("a.example.test", "A", "r", ("192.0.2.1",), 60)
    facts = DnsFacts("a.example.test", ["r"], "192.0.2.1", "example.test", [answer], "t", 0.5)
    assert list(answer.to_json()) == [f.name for f in dataclasses.fields(DnsAnswer)]
    assert list(facts.to_json()) == [f.name for f in dataclasses.fields(DnsFacts)]
    assert facts.to_json() == {**dataclasses.asdict(facts), "answers": [answer.to_json()]}
    assert answer.to_json() == {**dataclasses.asdict(answer), "data": ["192.0.2.1"]}


@pytest.mark.pure
def test_answers_read_from_a_line_equal_answers_built_in_code():
    built = DnsAnswer("a.example.test", "A", "r", ("192.0.2.1",), 60)
    read = DnsAnswer.from_json(built.to_json())
    assert read == built and hash(read) == hash(built) and type(read.data) is tuple
    extra = DnsAnswer.from_json({**built.to_json(), "class": "IN"})  # a newer writer's field
    assert extra == built and not hasattr(extra, "class")
    facts = DnsFacts.from_json({"host": "a.example.test", "answers": [built.to_json()], "x": 1})
    assert facts.answers == [built] and facts.resolvers == []

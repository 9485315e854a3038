"""The judge: cached judgements equal fresh ones, and the cache key is the verdict fields."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest

from certmatch.core import findings
from certmatch.core.anchors import TrustAnchor, anchor_of
from certmatch.core.certificates import ParsedChain, parse_chain
from certmatch.core.diagnosis import diagnose
from certmatch.core.dns_facts import DnsAnswer, DnsFacts
from certmatch.core.facts import VERDICT_FIELDS, SessionFacts, SniProbe, StartTlsFacts
from certmatch.core.identity import IdentityResult, PresentedIdentifiers, check_identity
from certmatch.core.judge import Judge
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustResult, TrustStore, assess_trust

pytestmark = pytest.mark.pure

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"


@pytest.fixture(scope="module")
def store() -> TrustStore:
    return TrustStore.load([RECORDINGS / "ca.pem"], use_system=False)


@pytest.fixture(scope="module")
def sessions() -> list[SessionFacts]:
    found = [
        s for path in sorted(RECORDINGS.glob("*.jsonl")) for s in read_recording(path).sessions
    ]
    assert len(found) >= 25
    return found


class Uncached:
    """The parts deciding needs, computed afresh every time: what the judge must agree with."""

    def __init__(self, store: TrustStore) -> None:
        self.store = store

    def chain(self, chain: tuple[str, ...]) -> ParsedChain:
        return parse_chain(chain)

    def presented(self, chain: tuple[str, ...]) -> PresentedIdentifiers:
        leaf = parse_chain(chain).leaf
        if leaf is None:
            raise ValueError("the leaf certificate cannot be parsed")
        return PresentedIdentifiers.from_certificate(leaf)

    def identity(self, reference: str, presented: PresentedIdentifiers) -> IdentityResult:
        return check_identity(reference, presented)

    def trust(self, chain: tuple[str, ...], at: datetime) -> TrustResult:
        return assess_trust(parse_chain(chain), at, self.store)

    def anchor(self, chain: tuple[str, ...], trust: TrustResult) -> TrustAnchor | None:
        return anchor_of(parse_chain(chain), trust, self.store)


def test_cached_judgements_equal_fresh_diagnoses_on_every_sample_recording(store, sessions) -> None:
    judge = Judge(store)
    for _ in range(2):  # the second round is answered from the caches
        for facts in sessions:
            fresh = findings.diagnose_with(facts, Uncached(store))
            judged = judge.judgement(facts)
            assert (
                judged.verdict,
                judged.failed,
                judged.primary,
                judged.causes,
                judged.presented_names,
                judged.leaf_sha256,
            ) == (
                fresh.verdict,
                fresh.failed,
                fresh.primary.id if fresh.primary else "",
                fresh.cause_ids,
                fresh.presented_names,
                fresh.certificates[0].sha256 if fresh.certificates else "",
            ), facts.id
            assert judge.diagnose(facts).to_json() == fresh.to_json(), facts.id
            assert diagnose(facts, store).to_json() == fresh.to_json(), facts.id
    assert judge.diagnosed == len(judge) == len({judge.key(f) for f in sessions})


def test_sessions_in_one_situation_share_one_judgement(store, sessions) -> None:
    judge = Judge(store)
    for facts in sessions:
        again = dataclasses.replace(facts, id="another", client_address="198.51.100.7:4000")
        assert judge.judgement(again) is judge.judgement(facts)
    assert judge.diagnosed == len({judge.key(f) for f in sessions})


# A different value for every field that bears on the verdict (but the capture time).
VERDICT_VARIANTS = {
    "requested_host": "other.example.test",
    "requested_host_source": "reverse-target",
    "sni": "other.example.test",
    "chain": [],
    "chain_source": "side-handshake",
    "server_error": "The remote server does not speak TLS.",
    "client_error": "tlsv1 alert unknown ca",
    "presented": "mirror",
    "client_decision": "alert",
    "client_alert": "unknown_ca",
    "sni_probe": SniProbe(sni="other.example.test"),
    "starttls": StartTlsFacts(client_requested=False),
    "dns": DnsFacts(host="other.example.test", resolvers=["127.0.0.1:53"]),
}


def _with_dns(facts: SessionFacts, ttl: int, elapsed: float) -> SessionFacts:
    answer = DnsAnswer("other.example.test", "A", "127.0.0.1:53", ("192.0.2.1",), ttl=ttl)
    dns = DnsFacts("other.example.test", ["127.0.0.1:53"], answers=[answer], elapsed=elapsed)
    return dataclasses.replace(facts, dns=dns)


def test_dns_timing_and_ttls_share_a_key_and_the_protocol_does_not(store) -> None:
    """The DNS rules read what the resolvers said, and (for SRV) the protocol: nothing else."""
    judge = Judge(store)
    facts = read_recording(RECORDINGS / "correct.jsonl").sessions[0]
    key = judge.key(_with_dns(facts, 300, 0.01))
    assert judge.key(_with_dns(facts, 60, 0.5)) == key
    assert judge.key(dataclasses.replace(_with_dns(facts, 60, 0.5), protocol="pop3")) != key
    assert judge.key(dataclasses.replace(facts, protocol="pop3")) == judge.key(facts)
    assert judge.judgement(_with_dns(facts, 60, 0.5)) is judge.judgement(_with_dns(facts, 1, 2))


def test_the_variants_cover_every_verdict_field() -> None:
    assert set(VERDICT_VARIANTS) | {"started"} == set(VERDICT_FIELDS)
    # Per-session numbers would give every session a judgement of its own (issue 12).
    assert not {"client_waited", "client_alert_code"} & set(VERDICT_FIELDS)


def _non_verdict_variants(facts: SessionFacts) -> dict[str, object]:
    other: dict[str, object] = {}
    for f in dataclasses.fields(SessionFacts):
        if f.name in VERDICT_FIELDS:
            continue
        value = getattr(facts, f.name)
        other[f.name] = ["changed"] if isinstance(value, list) else "changed"
    return other


def test_a_verdict_field_changes_the_key_and_no_other_field_does(store) -> None:
    judge = Judge(store)
    facts = read_recording(RECORDINGS / "correct.jsonl").sessions[0]
    key = judge.key(facts)
    for name, value in VERDICT_VARIANTS.items():
        assert judge.key(dataclasses.replace(facts, **{name: value})) != key, name
    other = _non_verdict_variants(facts)
    assert {"id", "client_address", "protocol", "notes"} <= set(other)
    for name, value in other.items():
        changed = dataclasses.replace(facts, **{name: value})
        assert judge.key(changed) == key, name
        # ...and the decision cannot see it either, so the cache cannot drift from it.
        assert findings.decide(changed, judge) == findings.decide(facts, judge), name


def test_the_capture_time_counts_only_through_validity(store) -> None:
    judge = Judge(store)
    facts = read_recording(RECORDINGS / "correct.jsonl").sessions[0]
    leaf = judge.chain(tuple(facts.chain)).summaries[0]
    assert leaf.not_before and leaf.not_after

    def at(moment: datetime) -> SessionFacts:
        return dataclasses.replace(facts, started=moment.isoformat())

    inside = leaf.not_before + (leaf.not_after - leaf.not_before) / 3
    later_inside = leaf.not_before + (leaf.not_after - leaf.not_before) / 2
    after = leaf.not_after + (leaf.not_after - leaf.not_before)
    assert judge.key(at(inside)) == judge.key(at(later_inside))
    assert judge.key(at(after)) != judge.key(at(inside))
    assert judge.judgement(at(after)).primary == "expired"
    assert "expired" not in judge.judgement(at(inside)).causes
    # The trust result names the exact time once a certificate is out of date.
    much_later = after + (leaf.not_after - leaf.not_before)
    assert judge.key(at(much_later)) == judge.key(at(after))
    text = judge.diagnose(at(much_later)).primary.explanation
    assert much_later.strftime("%Y-%m-%d %H:%M:%S") in text


def test_every_cache_has_a_size_limit(store, sessions) -> None:
    judge = Judge(store, size=1)
    for facts in sessions:
        judge.judgement(facts)
        judge.diagnose(facts)
    assert len(judge) <= 16 < len({judge.key(f) for f in sessions})
    assert judge._chains.cache_info().currsize <= 1
    assert len(judge._trust) <= 2 and len(judge._presented) <= 1 and len(judge._windows) <= 1
    # Forgetting costs time, never correctness.
    fresh = Judge(store)
    assert [judge.judgement(f) for f in sessions] == [fresh.judgement(f) for f in sessions]


def test_one_judge_per_store(store) -> None:
    assert Judge.for_store(store) is Judge.for_store(store)
    other = TrustStore.load([RECORDINGS / "ca.pem"], use_system=False)
    assert Judge.for_store(other) is not Judge.for_store(store)
    assert Judge.for_store(other).store is other


def test_a_chain_out_of_its_period_is_told_at_each_sessions_own_time(store, sessions) -> None:
    """Within one validity bucket only the "checked at" time differs: the judge assesses
    once and tells the result again at each time, exactly as assessing afresh would."""
    from datetime import timedelta

    judge = Judge(store)
    out_of_period = 0
    for facts in sessions:
        chain = tuple(facts.chain)
        if not chain:
            continue
        at = findings.capture_time(facts)
        for step in (0, 1, 61, 3600 * 26, -7):
            moment = at + timedelta(seconds=step, microseconds=250_000 * (step % 3))
            fresh = assess_trust(parse_chain(chain), moment, store)
            assert judge.trust(chain, moment) == fresh, (facts.id, step)
        out_of_period += any("checked at" in p.detail for p in fresh.problems)
    assert out_of_period >= 2  # expired and not-yet-valid samples
    assert len(judge._trust_bucket) >= 2  # the told-again path was taken

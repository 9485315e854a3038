"""core.report: the one text rendering of a diagnosis, shared by check, the plugin and the TUI."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest
from proxy_fixtures import REPO

from certmatch.core import report
from certmatch.core.diagnosis import Diagnosis, diagnose
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore

pytestmark = pytest.mark.pure

RECORDINGS = REPO / "recordings"


def _diagnosis(name: str) -> Diagnosis:
    (session,) = read_recording(RECORDINGS / name).sessions
    return diagnose(session, TrustStore.load([RECORDINGS / "ca.pem"], use_system=False))


def test_explanation_block_is_why_fix_see_under_the_cause():
    d = _diagnosis("wildcard-too-deep.jsonl")
    finding = d.findings[0]
    lines = report.explanation_lines(finding, indent="  ")
    assert lines[0] == f"  [wildcard-too-deep] {finding.cause.title}"
    assert lines[1] == f"    why: {finding.explanation}"
    assert lines[2] == f"    fix: {finding.fix}"
    assert lines[3].startswith("    see: ") and "RFC 6125 §6.4.3" in lines[3]
    assert report.explain(d, indent="  ").splitlines()[:4] == lines


def test_a_finding_without_citations_has_no_see_line():
    finding = _diagnosis("wildcard-too-deep.jsonl").findings[0]
    uncited = dataclasses.replace(finding, cause=dataclasses.replace(finding.cause, citations=()))
    assert [line.split(":")[0] for line in report.explanation_lines(uncited)[1:]] == [
        "  why",
        "  fix",
    ]
    assert report.Explanation.of(uncited).see_text == ""


def test_explanation_fields_come_from_the_finding_and_its_cause():
    finding = _diagnosis("no-sni-default-certificate.jsonl").findings[0]
    e = report.Explanation.of(finding)
    assert (e.id, e.title, e.severity) == (finding.id, finding.cause.title, finding.cause.severity)
    assert (e.why, e.fix) == (finding.explanation, finding.fix)
    assert any("RFC 6066" in c for c in e.see)


def test_session_line_names_host_names_verdict_and_cause_and_colours_only_when_asked():
    d = _diagnosis("name-not-in-certificate.jsonl")
    plain = report.session_line(d)
    for part in (
        "wrong.example.test (",
        "other.example.net",
        "✗ mismatch",
        "name-not-in-certificate",
    ):
        assert part in plain
    assert "\033[" not in plain
    coloured = report.session_line(d, colour=True)
    assert "\033[31m✗ mismatch    \033[0m name-not-in-certificate" in coloured  # padded inside


def test_describe_says_what_was_asked_and_presented_then_every_finding():
    d = _diagnosis("no-sni-default-certificate.jsonl")
    header, *rest = report.describe(d).splitlines()
    assert header.startswith(f"certmatch: session {d.facts.id} (")
    assert "'alt.example.test' (option, SNI none)" in header and header.endswith(": mismatch")
    assert rest == report.explain(d, indent="").splitlines()


def test_summary_counts_sessions_and_primary_causes():
    assert report.summary(0, 0, Counter(), Counter()) == "No sessions recorded."
    assert report.summary(1, 0, Counter(match=1), Counter()) == "1 session: 1 match; 0 failing."
    text = report.summary(
        3, 2, Counter(mismatch=2, match=1), Counter({"wildcard-apex": 1, "expired": 1})
    )
    assert text == (
        "3 sessions: 2 mismatch, 1 match; 2 failing.\nPrimary causes: wildcard-apex x1, expired x1"
    )


def test_verdict_label_is_readable_without_colour():
    assert report.verdict_label("legacy-match") == "~ legacy-match"
    assert set(report.VERDICT_SYMBOLS) == {
        "match",
        "legacy-match",
        "mismatch",
        "untrusted",
        "error",
    }


def test_explain_shows_the_three_names_side_by_side_when_dns_was_looked_up():
    d = _diagnosis("cname-alias.jsonl")
    lines = report.explain(d, indent="").splitlines()
    assert lines[0] == "client:      mailhost.example.test (option)"
    assert lines[1].startswith("DNS:         mailhost.example.test → CNAME imap.example.test → ")
    assert re.search(r"→ 127\.0\.0\.1 \(127\.0\.0\.1:\d+, TTL 60 s\)$", lines[1])  # the resolver
    certificate = next(line for line in lines if line.startswith("certificate: "))
    assert certificate == "certificate: imap.example.test, far.example.test"
    assert lines.index(certificate) < lines.index(next(x for x in lines if x.startswith("[")))


def test_explain_without_dns_facts_starts_with_the_findings():
    d = _diagnosis("name-not-in-certificate.jsonl")
    assert report.three_names(d) == []
    assert report.explain(d, indent="").startswith("[name-not-in-certificate]")


@pytest.mark.parametrize(
    ("verdict", "causes", "shown"),
    [
        ("match", (), "✓ match"),
        ("match", ("trailing-dot",), "⚠ match"),
        ("match", ("requested-host-assumed",), "✗ match"),
        ("match", ("plaintext-auth",), "‼ security"),
        ("untrusted", ("starttls-injection", "unknown-issuer"), "‼ security"),
        ("mismatch", ("name-not-in-certificate",), "✗ mismatch"),
        ("untrusted", ("unknown-issuer",), "! untrusted"),
    ],
)
def test_the_badge_never_shows_a_tick_beside_a_finding_that_fails(verdict, causes, shown) -> None:
    assert report.verdict_badge(verdict, causes)[0] == shown

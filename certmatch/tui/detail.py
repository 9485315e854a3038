"""The detail pane's text: one session's diagnosis, laid out for reading.

Everything shown comes from the domain's ``Diagnosis``; this only arranges
it: the explanation with the session's names, the evidence, every presented
identifier with its outcome, the chain, the fix and the citations (links where a citation
has a public address). What "why / fix / see" say for a finding is
``certmatch.core.report.Explanation``, the same text the CLI and the pytest
plugin print; only the layout and the styles are the TUI's. Every string from the recording
or a certificate is shown escaped (``printable``; the diagnosis's sentences through
``shown_prose``), and as ``Text``, never markup.

The detail is a list of ``Line``s, each a lead (its indent or label) and a body; the pane
wraps a body under itself, after its lead (``wrap_lines``), so a wrapped line keeps its
indent, and a fingerprint breaks between groups of bytes, never inside one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from certmatch.core.causes import CAUSES, Citation
from certmatch.core.diagnosis import Diagnosis
from certmatch.core.report import Explanation, shown_names, shown_prose, three_names
from certmatch.core.text import counted, printable
from certmatch.tui import colours
from certmatch.tui.model import Row
from certmatch.tui.session_list import fit
from certmatch.tui.severity import (
    SEVERITY_STYLES,
    SEVERITY_SYMBOLS,
    badge,
    cause_severity,
    further_causes,
)

# The headline's badge, by severity (``certmatch.tui.severity``): a security finding is never
# green, nor a ✓.
BADGE_STYLES = {
    "security": colours.ALERT,
    "failure": f"bold {colours.RED} reverse",
    "warning": f"bold {colours.YELLOW} reverse",
    "ok": f"bold {colours.GREEN} reverse",
}
_ASKED_WIDTH = 34  # the left column of the names side by side
_NAMES_SHOWN = 4  # certificate names listed under the headline before "+N more"
_OUTCOME_SYMBOLS = {"match": "✓", "no-match": "✗", "rejected": "⚠", "not-considered": "·"}
_OUTCOME_STYLES = {
    "match": colours.GREEN,
    "no-match": colours.RED,
    "rejected": colours.YELLOW,
    "not-considered": colours.MUTED,
}
_HEADING = "bold underline"
_LINK = colours.CYAN

# Where the requested host came from, in words (the words of the judge's evidence).
HOST_SOURCE_WORDS = {
    "sni": "the client's SNI",
    "socks5": "the SOCKS5 target",
    "http-connect": "the HTTP CONNECT target",
    "reverse-target": "the reverse-proxy target",
    "option": "configured with --host",
    "unknown": "source unknown",
}
# Where the recorded chain came from (``SessionFacts.chain_source``).
CHAIN_SOURCE_WORDS = {
    "proxy": "read by the proxy in its own handshake with the server",
    "wire": "read from the wire: the server's Certificate message as the proxy relayed it",
    "side-handshake": (
        "from a side handshake: TLS 1.3 encrypts the certificate on the wire, so the proxy "
        "asked the same server again with the client's SNI and versions"
    ),
    "resumed": (
        "the handshake resumed an earlier session and carried no certificate: this is the "
        "chain seen for that server before"
    ),
}
# What the client was shown (``SessionFacts.presented``).
PRESENTED_WORDS = {
    "mirror": "certmatch's copy of the server certificate's names and dates (mirror mode)",
    "substitute": "mitmproxy's substitute certificate, not the server's own",
    "real": "the server's own chain (observe mode relays the handshake)",
}
# Why the client's SNI did not go upstream (``SessionFacts.upstream_sni_reason``).
UPSTREAM_SNI_WORDS = {
    "ip-literal": (
        "the client sent an IP address as SNI, which HostName may not carry (RFC 6066 §3), "
        "so the proxy sent none upstream"
    ),
    "not-encodable": (
        "the client's SNI cannot be sent as a host name, so the proxy sent none upstream"
    ),
}


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the detail: ``body`` wraps under itself, after ``lead`` (an indent or a
    label), never back to the left edge."""

    lead: Text
    body: Text


class _Writer:
    def __init__(self) -> None:
        self.lines: list[Line] = []

    def add(self, lead: str | Text = "", body: str | Text = "", style: str = "") -> None:
        lead = lead if isinstance(lead, Text) else Text(lead, style)
        body = body if isinstance(body, Text) else Text(body, style)
        self.lines.append(Line(lead, body))

    def blank(self) -> None:
        self.add()

    def section(self, title: str) -> None:
        self.blank()
        self.add("", title, _HEADING)

    def prose(self, body: str, *, indent: int = 2, style: str = "") -> None:
        """``body``'s lines, each indented (wrapped ones too)."""
        for part in body.splitlines() or [""]:
            self.add(" " * indent, part, style)

    def labelled(self, label: str, body: str | Text, style: str = "") -> None:
        """``    SAN:     a, b``: wrapped lines start under the value, not under the label."""
        self.add(label, body, style)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "(unreadable)"


def grouped_fingerprint(fingerprint: str, group: int = 8) -> str:
    """``AB:CD:…`` with a space after every ``group`` bytes, where a narrow pane may wrap it:
    never inside a byte."""
    parts = fingerprint.split(":")
    return " ".join(":".join(parts[i : i + group]) for i in range(0, len(parts), group))


_RFC_SECTION = re.compile(r"^§(\d+(?:\.\d+)*)$")
_RFC_APPENDIX = re.compile(r"^Appendix ([A-Z](?:\.\d+)*)$")


def citation_link(citation: Citation) -> str | None:
    """The public address of a citation: an RFC (at its section or appendix) or a CVE;
    None for one without an address (a knowledge-base article, a manual)."""
    source = citation.source
    if source.startswith("RFC "):
        number = source.removeprefix("RFC ").strip()
        if not number.isdigit():
            return None
        url = f"https://www.rfc-editor.org/rfc/rfc{number}"
        section = citation.section.strip()
        if found := _RFC_SECTION.match(section):
            return f"{url}#section-{found.group(1)}"
        if found := _RFC_APPENDIX.match(section):
            return f"{url}#appendix-{found.group(1)}"
        return url
    if re.fullmatch(r"CVE-\d{4}-\d{4,}", source):
        return f"https://www.cve.org/CVERecord?id={source}"
    return None


def _citation_text(citation: Citation) -> Text:
    """A citation, its source and section a link where it has an address."""
    text = Text()
    name = f"{citation.source} {citation.section}".strip()
    link = citation_link(citation)
    text.append(name, Style.parse(_LINK) + Style(link=link, underline=True) if link else "")
    if citation.note:
        text.append(f" ({citation.note})")
    return text


def _headline(w: _Writer, d: Diagnosis) -> None:
    """The verdict and the cause, then what was asked and what the certificate names:
    `` ✗ mismatch  ✗ cn-ignored-san-present +1 (failure)``, the cause's title, then
    ``asked cnsan.example.test (the client's SNI) → certificate: other.example.test``."""
    f = d.facts
    label, severity = badge(d.verdict, d.cause_ids)
    if severity == "security":
        label = f"{label} ({d.verdict})"
    top = Text()
    top.append(f" {label} ", BADGE_STYLES[severity])
    top.append("  ")
    primary = d.primary
    if primary is None:
        top.append(
            "The certificate matches the name the client asked for.", f"bold {colours.GREEN}"
        )
        w.add("", top)
    else:
        primary_severity = cause_severity(primary.id)
        top.append(
            f"{SEVERITY_SYMBOLS[primary_severity]} {primary.id}",
            SEVERITY_STYLES[primary_severity],
        )
        further, warnings = further_causes(primary.id, [f.cause.id for f in d.findings])
        if further:
            top.append(f" +{len(further)}", "bold")
        top.append(f" ({primary_severity})", colours.MUTED)
        if warnings:
            top.append(f" · {counted(len(warnings), 'warning')} below", colours.MUTED)
        w.add("", top)
        w.add(" ", primary.cause.title, "bold")
    asked = Text("asked ")
    asked.append(printable(f.requested_host or "(unknown)"), "bold")
    asked.append(f" ({_host_source(f.requested_host_source)}) → certificate: ")
    shown = shown_names(d.presented_names[:2]) if d.presented_names else "(no certificate)"
    more = len(d.presented_names) - 2
    asked.append(shown + (f" +{more}" if more > 0 else ""), "bold")
    w.add(" ", asked)


def _host_source(source: str) -> str:
    return printable(HOST_SOURCE_WORDS.get(source, source))


def _names_side_by_side(w: _Writer, d: Diagnosis) -> None:
    """The client's names (asked, where from, SNI) beside the certificate's; with DNS facts,
    the three names, client, DNS and certificate (``report.three_names``), as check --explain
    shows them."""
    f = d.facts
    three = three_names(d, source_words=HOST_SOURCE_WORDS)
    if three:
        # Each line is a 13-cell label ("client:      ", "DNS:         ", …) and its value.
        for line in three:
            label, value = line[:13], line[13:]
            w.add(Text(" " + label, "bold" if label.strip() else ""), value, "")
        if f.sni != f.requested_host:
            sni = printable(f.sni) if f.sni is not None else "(none sent)"
            w.add(Text(" SNI:         ", "bold"), sni)
        return
    asked = [
        printable(f.requested_host or "(unknown)"),
        f"from: {_host_source(f.requested_host_source)}",
        f"SNI: {printable(f.sni) if f.sni is not None else '(none sent)'}",
    ]
    names = [shown_prose(name) for name in d.presented_names] or ["(no certificate)"]
    if len(names) > _NAMES_SHOWN:
        names = [*names[: _NAMES_SHOWN - 1], f"+{len(names) - _NAMES_SHOWN + 1} more"]
    count = f" ({len(d.presented_names)})" if d.presented_names else ""
    head = Text.assemble(" ", ("client asked", _HEADING), " " * (_ASKED_WIDTH - 11))
    w.add(head, f"certificate names{count}", _HEADING)
    for position in range(max(len(asked), len(names))):
        left = asked[position] if position < len(asked) else ""
        lead = Text(" " + fit(left, _ASKED_WIDTH) + " ", "bold" if position == 0 else "")
        w.add(lead, names[position] if position < len(names) else "", "bold")


def detail_lines(d: Diagnosis, recording: str, *, group_count: int | None = None) -> list[Line]:
    """The whole detail for one session (the latest of a group when ``group_count``), line by
    line. The decisive facts come first (verdict, cause, what was asked, what the certificate
    names), the session's ids and the recording's path last."""
    f = d.facts
    w = _Writer()
    primary = d.primary
    why = Explanation.of(primary) if primary is not None else None
    _headline(w, d)
    if group_count is not None:
        w.add(
            " ",
            f"Group of {group_count:,} session{'s' if group_count != 1 else ''} with this "
            "host, certificate and cause; showing the latest.",
            "italic",
        )
    _names_side_by_side(w, d)

    _section_why(w, d, why)
    if len(d.findings) > 1:  # the further causes before the long sections, not after them
        w.section(f"Also found ({len(d.findings) - 1})")
        for finding in d.findings[1:]:
            also = Explanation.of(finding)
            lead = Text(f"  [{also.id}] ", colours.CYAN)
            w.add(lead, f"{also.title} ({also.severity})", "bold")
            w.prose(also.why, indent=4)
            w.add("    Fix: ", also.fix)
            if also.see:
                w.add("    See: ", _citations_inline(finding.cause.citations))
    _section_evidence(w, d)
    _section_identifiers(w, d)
    _section_chain(w, d)
    if why is not None:
        w.section("Fix")
        w.prose(why.fix)
        citations = primary.cause.citations if primary is not None else ()
        if citations:
            w.section("Look up")
            for citation in citations:
                w.add("  • ", _citation_text(citation))
    if f.notes:
        w.section("Notes recorded by the proxy")
        for note in f.notes:
            w.prose(shown_prose(note), style=colours.MUTED)
    w.section("Session")
    w.prose(
        f"{printable(f.id)} · {printable(f.started)} · {printable(f.protocol)} "
        f"({'STARTTLS' if f.tls_kind == 'starttls' else 'implicit TLS'}) · "
        f"client {printable(f.client_address or '(unknown)')} → "
        f"server {printable(f.server_address or '(unknown)')}",
        style=colours.MUTED,
    )
    w.add("  recording: ", printable(recording), colours.MUTED)
    return w.lines


def row_lines(row: Row, problem: str) -> list[Line]:
    """What the list knew of a session whose line can no longer be read back (``problem``
    says why): its badge and cause, what was asked and what the certificate names."""
    j = row.judgement
    w = _Writer()
    w.add(" ", shown_prose(problem), f"bold {colours.RED}")
    w.blank()
    label, severity = badge(j.verdict, j.causes)
    top = Text()
    top.append(f" {label} ", BADGE_STYLES[severity])
    if j.primary:
        further, _warnings = further_causes(j.primary, j.causes)
        top.append("  ")
        top.append(f"{SEVERITY_SYMBOLS[cause_severity(j.primary)]} {j.primary}", "bold")
        if further:
            top.append(f" +{len(further)}", "bold")
    w.add("", top)
    if j.primary in CAUSES:
        w.add(" ", CAUSES[j.primary].title, "bold")
    asked = Text("asked ")
    asked.append(printable(row.host or "(unknown)"), "bold")
    asked.append(f" ({_host_source(row.host_source)}) → certificate: ")
    asked.append(shown_names(j.presented_names) or "(no certificate)", "bold")
    w.add(" ", asked)
    w.add(" ", f"SNI: {printable(row.sni) if row.sni is not None else '(none sent)'}")
    w.add(" ", f"protocol: {printable(row.protocol)}, at {printable(row.time)} UTC")
    w.add(" ", f"client: {printable(row.client)}")
    w.blank()
    w.add(
        " ", "The rest of the detail (evidence, chain, fix) was in the line that is gone.", "italic"
    )
    return w.lines


def _citations_inline(citations: Sequence[Citation]) -> Text:
    return Text("; ").join(_citation_text(c) for c in citations)


def _section_why(w: _Writer, d: Diagnosis, why: Explanation | None) -> None:
    w.section("Why")
    if why is not None:
        w.prose(why.why)
    else:
        reason = d.to_json().get("explanation") or "No cause was found."
        w.prose(shown_prose(reason))


def _section_evidence(w: _Writer, d: Diagnosis) -> None:
    f = d.facts
    checks = d.identity.checks if d.identity else ()
    identifier_lines = {f"{c.kind} {c.presented}: {c.outcome} ({c.reason})" for c in checks}
    primary = d.primary
    evidence = primary.evidence if primary is not None else ()
    other_evidence = [line for line in evidence if line not in identifier_lines]
    if not evidence:
        source = HOST_SOURCE_WORDS.get(f.requested_host_source, f.requested_host_source)
        other_evidence = [
            f"requested host: {f.requested_host or '(unknown)'} ({source})",
            f"client SNI: {f.sni if f.sni is not None else 'none sent'}",
        ]
    w.section("Evidence")
    for line in other_evidence:
        label, colon, value = shown_prose(line).partition(": ")
        if colon and len(label) < 30:
            w.add(f"  {label}: ", value)  # wrapped values stay under the value
        else:
            w.prose(shown_prose(line))
    if f.upstream_sni_reason:
        reason = UPSTREAM_SNI_WORDS.get(f.upstream_sni_reason, f.upstream_sni_reason)
        w.add("  no SNI upstream: ", printable(reason))


def _section_identifiers(w: _Writer, d: Diagnosis) -> None:
    f = d.facts
    checks = d.identity.checks if d.identity else ()
    w.section(
        f"Presented identifiers ({len(checks)}), "
        f"each against {printable(f.requested_host or '(unknown)')}"
    )
    if not checks:
        w.prose("none checked (no readable certificate)", style=colours.MUTED)
    # A session that matches shows its other names plainly: they are no failure there.
    matched = d.verdict in ("match", "legacy-match")
    for check in checks:
        outcome_style = _OUTCOME_STYLES.get(check.outcome, "")
        if matched and check.outcome == "no-match":
            outcome_style = colours.MUTED
        symbol = _OUTCOME_SYMBOLS.get(check.outcome, "?")
        if matched and check.outcome == "no-match":
            symbol = "·"
        line = Text()
        line.append(printable(check.presented), "bold")
        line.append(f"  {check.outcome} [{check.rule}]", outcome_style)
        w.add(Text(f"  {symbol} {check.kind.upper():<3} ", outcome_style), line)
        w.prose(shown_prose(check.reason), indent=8, style=colours.MUTED)


def _section_chain(w: _Writer, d: Diagnosis) -> None:
    f = d.facts
    w.section(f"Certificate chain as presented ({len(d.certificates)})")
    if f.chain_source:
        source = CHAIN_SOURCE_WORDS.get(f.chain_source, f.chain_source)
        w.add("  where from: ", printable(source))
    if f.presented:
        shown = PRESENTED_WORDS.get(f.presented, f.presented)
        w.add("  the client saw: ", printable(shown))
    if not d.certificates:
        w.prose("no certificate was received", style=colours.MUTED)
    for s in d.certificates:
        role = "leaf" if s.index == 0 else ("CA" if s.is_ca else "certificate")
        subject = s.subject or ("(unreadable subject)" if s.error else "(empty subject)")
        w.add(Text(f"  [{s.index}] {role}: ", "bold"), printable(subject))
        w.labelled("      issuer:  ", printable(s.issuer or "(unreadable)"))
        w.labelled("      valid:   ", f"{_when(s.not_before)} to {_when(s.not_after)}")
        if s.dns_names or s.ip_addresses:
            san = ", ".join(printable(name) for name in [*s.dns_names, *s.ip_addresses])
            w.labelled("      SAN:     ", san)
        if s.sha256:
            w.labelled("      SHA-256: ", grouped_fingerprint(s.sha256))
        if s.sha1:
            w.labelled("      SHA-1:   ", grouped_fingerprint(s.sha1))
        if s.error:
            w.labelled("      problem: ", shown_prose(s.error), colours.YELLOW)


def as_text(lines: Iterable[Line]) -> Text:
    """The lines unwrapped, one ``Text`` (for a test, or a terminal that wraps by itself)."""
    text = Text()
    for line in lines:
        text.append_text(line.lead)
        text.append_text(line.body)
        text.append("\n")
    return text


def render_detail(d: Diagnosis, recording: str, *, group_count: int | None = None) -> Text:
    """The whole detail pane for one session as one ``Text``, unwrapped."""
    return as_text(detail_lines(d, recording, group_count=group_count))


def wrap_lines(lines: Iterable[Line], width: int, console: Console) -> list[Line]:
    """The lines as the pane shows them ``width`` cells wide, each still a lead and a body: a
    body too long for its line wraps at spaces (folding a word longer than the space), its
    further lines led by blanks as wide as the lead. ``line_segments`` renders one."""
    out: list[Line] = []
    for line in lines:
        lead_width = line.lead.cell_len
        room = width - lead_width
        if line.body.cell_len <= room or not line.body:
            out.append(line)
            continue
        lead = line.lead
        if room < 12:  # a lead too wide for the pane: the body goes below, two cells in
            out.append(Line(lead, Text()))
            lead_width, room = 2, max(1, width - 2)
            lead = Text("  ")
        pieces = line.body.wrap(console, room, overflow="fold", no_wrap=False)
        for number, piece in enumerate(pieces):
            piece.rstrip()
            out.append(Line(lead if number == 0 else Text(" " * lead_width), piece))
    return out


def line_segments(line: Line, console: Console) -> list[Segment]:
    """One line of the pane as segments (rendered only when it is on screen)."""

    def segments(text: Text) -> list[Segment]:
        # Text.render leaves out the text's own style (a console applies it): apply it here.
        rendered = text.render(console, end="")
        if not text.style:
            return list(rendered)
        return list(Segment.apply_style(rendered, console.get_style(text.style)))

    return [*segments(line.lead), *segments(line.body)]

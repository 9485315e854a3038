"""The detail pane's text: one session's diagnosis, laid out for reading.

Everything shown comes from the domain's ``Diagnosis``; this only arranges
it: the explanation with the session's names, the evidence, every presented
identifier with its outcome, the chain, the fix and the citations as text a
person can look up. What "why / fix / see" say for a finding is
``certmatch.core.report.Explanation``, the same text the CLI and the pytest
plugin print; only the layout and the styles are the TUI's. Every string from the recording
or a certificate is shown escaped (``printable``; the diagnosis's sentences through
``shown_prose``), and as ``Text``, never markup.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from certmatch.core.diagnosis import Diagnosis
from certmatch.core.report import Explanation, shown_names, shown_prose
from certmatch.core.text import printable
from certmatch.tui import colours
from certmatch.tui.session_list import fit
from certmatch.tui.severity import SEVERITY_STYLES, SEVERITY_SYMBOLS, badge, cause_severity

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


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "(unreadable)"


def _section(text: Text, title: str) -> None:
    text.append("\n")
    text.append(title, _HEADING)
    text.append("\n")


def _indented(text: Text, body: str, style: str = "") -> None:
    for line in body.splitlines() or [""]:
        text.append(f"  {line}\n", style)


def _headline(text: Text, d: Diagnosis) -> None:
    """The verdict and the cause, then what was asked and what the certificate names:
    `` ✗ mismatch  ✗ cn-ignored-san-present +1 (failure)``, the cause's title, then
    ``asked cnsan.example.test (sni) → certificate: other.example.test``."""
    f = d.facts
    label, severity = badge(d.verdict, d.cause_ids)
    if severity == "security":
        label = f"{label} ({d.verdict})"
    text.append(f" {label} ", BADGE_STYLES[severity])
    text.append("  ")
    primary = d.primary
    if primary is None:
        text.append(
            "The certificate matches the name the client asked for.\n", f"bold {colours.GREEN}"
        )
    else:
        primary_severity = cause_severity(primary.id)
        text.append(
            f"{SEVERITY_SYMBOLS[primary_severity]} {primary.id}",
            SEVERITY_STYLES[primary_severity],
        )
        if len(d.findings) > 1:
            text.append(f" +{len(d.findings) - 1}", "bold")
        text.append(f" ({primary_severity})\n", colours.MUTED)
        text.append(f"{primary.cause.title}\n", "bold")
    text.append("asked ")
    text.append(printable(f.requested_host or "(unknown)"), "bold")
    text.append(f" ({printable(f.requested_host_source)}) → certificate: ")
    shown = shown_names(d.presented_names[:2]) if d.presented_names else "(no certificate)"
    more = len(d.presented_names) - 2
    text.append(shown + (f" +{more}" if more > 0 else ""), "bold")
    text.append("\n")


def _names_side_by_side(text: Text, d: Diagnosis) -> None:
    """The client's names (asked, where from, SNI) beside the certificate's."""
    f = d.facts
    asked = [
        printable(f.requested_host or "(unknown)"),
        f"from: {printable(f.requested_host_source)}",
        f"SNI: {printable(f.sni) if f.sni is not None else '(none sent)'}",
    ]
    names = [shown_prose(name) for name in d.presented_names] or ["(no certificate)"]
    if len(names) > _NAMES_SHOWN:
        names = [*names[: _NAMES_SHOWN - 1], f"+{len(names) - _NAMES_SHOWN + 1} more"]
    count = f" ({len(d.presented_names)})" if d.presented_names else ""
    text.append(fit("client asked", _ASKED_WIDTH) + " ", _HEADING)
    text.append(f"certificate names{count}\n", _HEADING)
    for position in range(max(len(asked), len(names))):
        left = asked[position] if position < len(asked) else ""
        text.append(fit(left, _ASKED_WIDTH) + " ", "bold" if position == 0 else "")
        text.append(f"{names[position] if position < len(names) else ''}\n", "bold")


def render_detail(d: Diagnosis, recording: str, *, group_count: int | None = None) -> Text:
    """The whole detail pane for one session (the latest of a group when ``group_count``).

    The decisive facts come first (what was asked, what the certificate names, the verdict,
    the cause), the session's ids and the recording's path last."""
    f = d.facts
    text = Text()
    primary = d.primary
    why = Explanation.of(primary) if primary is not None else None
    _headline(text, d)
    if group_count is not None:
        text.append(
            f"Group of {group_count:,} session{'s' if group_count != 1 else ''} with this host, "
            "certificate and cause; showing the latest.\n",
            "italic",
        )
    _names_side_by_side(text, d)

    _section(text, "Why")
    if why is not None:
        _indented(text, why.why)
    else:
        reason = d.to_json().get("explanation") or "No cause was found."
        _indented(text, shown_prose(reason))

    checks = d.identity.checks if d.identity else ()
    identifier_lines = {f"{c.kind} {c.presented}: {c.outcome} ({c.reason})" for c in checks}
    evidence = primary.evidence if primary is not None else ()
    other_evidence = [line for line in evidence if line not in identifier_lines]
    if not evidence:
        other_evidence = [
            f"requested host: {f.requested_host or '(unknown)'} ({f.requested_host_source})",
            f"client SNI: {f.sni if f.sni is not None else 'none sent'}",
        ]
    _section(text, "Evidence")
    for line in other_evidence:
        _indented(text, shown_prose(line))

    _section(
        text,
        f"Presented identifiers ({len(checks)}), "
        f"each against {printable(f.requested_host or '(unknown)')}",
    )
    if not checks:
        _indented(text, "none checked (no readable certificate)", colours.MUTED)
    for check in checks:
        symbol = _OUTCOME_SYMBOLS.get(check.outcome, "?")
        text.append(f"  {symbol} {check.kind.upper():<3} ", _OUTCOME_STYLES.get(check.outcome, ""))
        text.append(printable(check.presented), "bold")
        text.append(f"  {check.outcome} [{check.rule}]\n", _OUTCOME_STYLES.get(check.outcome, ""))
        _indented(text, f"  {shown_prose(check.reason)}", colours.MUTED)

    _section(text, f"Certificate chain as presented ({len(d.certificates)})")
    if not d.certificates:
        _indented(text, "no certificate was received", colours.MUTED)
    for s in d.certificates:
        role = "leaf" if s.index == 0 else ("CA" if s.is_ca else "certificate")
        text.append(f"  [{s.index}] {role}: ", "bold")
        subject = s.subject or ("(unreadable subject)" if s.error else "(empty subject)")
        text.append(f"{printable(subject)}\n")
        _indented(text, f"    issuer:  {printable(s.issuer or '(unreadable)')}")
        _indented(text, f"    valid:   {_when(s.not_before)} to {_when(s.not_after)}")
        if s.dns_names or s.ip_addresses:
            san = ", ".join(printable(name) for name in [*s.dns_names, *s.ip_addresses])
            _indented(text, f"    SAN:     {san}")
        _indented(text, f"    SHA-256: {s.sha256}")
        _indented(text, f"    SHA-1:   {s.sha1}")
        if s.error:
            _indented(text, f"    problem: {shown_prose(s.error)}", colours.YELLOW)

    if why is not None:
        _section(text, "Fix")
        _indented(text, why.fix)
        if why.see:
            _section(text, "Look up")
            for citation in why.see:
                text.append(f"  • {citation}\n")
    if len(d.findings) > 1:
        _section(text, "Also found")
        for also in map(Explanation.of, d.findings[1:]):
            text.append(f"  [{also.id}] ", colours.CYAN)
            text.append(f"{also.title} ({also.severity})\n", "bold")
            _indented(text, f"  {also.why}")
            _indented(text, f"  Fix: {also.fix}")
            if also.see:
                _indented(text, f"  See: {also.see_text}", colours.MUTED)
    if f.notes:
        _section(text, "Notes recorded by the proxy")
        for note in f.notes:
            _indented(text, shown_prose(note), colours.MUTED)
    _section(text, "Session")
    _indented(
        text,
        f"{printable(f.id)} · {printable(f.started)} · {printable(f.protocol)} "
        f"({'STARTTLS' if f.tls_kind == 'starttls' else 'implicit TLS'}) · "
        f"client {printable(f.client_address or '(unknown)')} → "
        f"server {printable(f.server_address or '(unknown)')}",
        colours.MUTED,
    )
    _indented(text, f"recording: {printable(recording)}", colours.MUTED)
    return text

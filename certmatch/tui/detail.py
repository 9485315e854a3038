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
from certmatch.core.report import Explanation, shown_prose, verdict_label
from certmatch.core.text import printable

VERDICT_STYLES = {
    "match": "bold green",
    "legacy-match": "bold yellow",
    "mismatch": "bold red",
    "untrusted": "bold magenta",
    "error": "bold red",
}
_OUTCOME_SYMBOLS = {"match": "✓", "no-match": "✗", "rejected": "⚠", "not-considered": "·"}
_OUTCOME_STYLES = {
    "match": "green",
    "no-match": "red",
    "rejected": "yellow",
    "not-considered": "dim",
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


def render_detail(d: Diagnosis, recording: str, *, group_count: int | None = None) -> Text:
    """The whole detail pane for one session (the latest of a group when ``group_count``)."""
    f = d.facts
    text = Text()
    primary = d.primary
    why = Explanation.of(primary) if primary is not None else None
    text.append(f" {verdict_label(d.verdict)} ", VERDICT_STYLES.get(d.verdict, "bold") + " reverse")
    if why is not None:
        text.append(f"  {why.title}  ", "bold")
        text.append(f"[{why.id}]", "cyan")
    else:
        text.append("  The certificate matches the name the client asked for.", "bold")
    text.append("\n")
    if group_count is not None:
        text.append(
            f"Group of {group_count:,} session{'s' if group_count != 1 else ''} with this host, "
            "certificate and cause; showing the latest.\n",
            "italic",
        )
    text.append(
        f"Session {printable(f.id)} · {printable(f.started)} · {printable(f.protocol)} "
        f"({'STARTTLS' if f.tls_kind == 'starttls' else 'implicit TLS'}) · "
        f"client {printable(f.client_address or '(unknown)')} → "
        f"server {printable(f.server_address or '(unknown)')}\n",
        "dim",
    )
    text.append(f"Recording: {printable(recording)}\n", "dim")

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
        _indented(text, "none checked (no readable certificate)", "dim")
    for check in checks:
        symbol = _OUTCOME_SYMBOLS.get(check.outcome, "?")
        text.append(f"  {symbol} {check.kind.upper():<3} ", _OUTCOME_STYLES.get(check.outcome, ""))
        text.append(printable(check.presented), "bold")
        text.append(f"  {check.outcome} [{check.rule}]\n", _OUTCOME_STYLES.get(check.outcome, ""))
        _indented(text, f"  {shown_prose(check.reason)}", "dim")

    _section(text, f"Certificate chain as presented ({len(d.certificates)})")
    if not d.certificates:
        _indented(text, "no certificate was received", "dim")
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
            _indented(text, f"    problem: {shown_prose(s.error)}", "yellow")

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
            text.append(f"  [{also.id}] ", "cyan")
            text.append(f"{also.title} ({also.severity})\n", "bold")
            _indented(text, f"  {also.why}")
            _indented(text, f"  Fix: {also.fix}")
            if also.see:
                _indented(text, f"  See: {also.see_text}", "dim")
    if f.notes:
        _section(text, "Notes recorded by the proxy")
        for note in f.notes:
            _indented(text, shown_prose(note), "dim")
    return text

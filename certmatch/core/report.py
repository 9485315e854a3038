"""A diagnosis as text: the one renderer shared by the CLI, the pytest plugin and the TUI.

Pure functions that return strings; no I/O and no terminal handling beyond an optional
ANSI colour on the verdict. The API:

* :data:`VERDICT_SYMBOLS` and :func:`verdict_label` (``"✗ mismatch"``): a verdict readable
  without colour.
* :func:`session_line`: the one-line summary of a session that ``certmatch check`` prints
  (:func:`session_time`, then :func:`session_line_rest`).
* :func:`summary`: the closing lines of ``certmatch check`` (sessions, verdicts, failing,
  primary causes).
* :class:`Explanation` (``Explanation.of(finding)``): a finding's "why / fix / see" as plain
  fields (id, title, severity, why, fix, see), for a caller that lays them out itself, such as
  the TUI's detail pane with its own styles.
* :func:`explanation_lines`: one finding as the "why / fix / see" block, indented;
  :func:`explain` joins the blocks of every finding of a session (``check --explain``).
* :func:`three_names`: the client's name, DNS's and the certificate's, side by side, when the
  session has DNS facts (the first lines of :func:`explain`).
* :func:`describe`: a header line naming what the client asked for and what the certificate
  names, then every finding's block (the pytest plugin's failure message).
* :func:`anchor_line`: the root a trusted chain reached and where that root came from (the
  recording's header, ``--ca-file``, the system store); :func:`recorded_anchors_note`: the
  line ``check`` adds when a recording's own CAs trusted some of its sessions.

Every string from the recording is shown through :func:`~certmatch.core.text.printable`; a
diagnosis's sentences, which already quote names through it, through :func:`shown_prose`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from certmatch.core.causes import CAUSES
from certmatch.core.diagnosis import Diagnosis, Finding
from certmatch.core.dns_rules import dns_summary
from certmatch.core.facts import SessionFacts
from certmatch.core.text import printable

VERDICT_SYMBOLS = {
    "match": "✓",
    "legacy-match": "~",
    "mismatch": "✗",
    "untrusted": "!",
    "error": "?",
}
_ANSI_COLOURS = {
    "match": "32",
    "legacy-match": "33",
    "mismatch": "31",
    "untrusted": "35",
    "error": "31",
}
# A security finding or a failing match is coloured by its severity, not its verdict.
_ANSI_SEVERITY: dict[SessionSeverity, str] = {"security": "1;31", "warning": "33"}
_NAMES_WIDTH = 48


def verdict_label(verdict: str) -> str:
    """The verdict with its symbol, readable without colour: ``"✗ mismatch"``."""
    return f"{VERDICT_SYMBOLS.get(verdict, '?')} {verdict}"


SessionSeverity = Literal["security", "failure", "warning", "ok"]
SEVERITY_SYMBOLS: dict[SessionSeverity, str] = {
    "security": "‼",
    "failure": "✗",
    "warning": "⚠",
    "ok": "✓",
}
_SEVERITY_RANK: dict[SessionSeverity, int] = {"ok": 0, "warning": 1, "failure": 2, "security": 3}


def cause_severity(cause_id: str) -> SessionSeverity:
    """The catalogue's severity of one cause (an unknown id counts as a failure)."""
    cause = CAUSES.get(cause_id)
    return cause.severity if cause is not None else "failure"


def session_severity(verdict: str, cause_ids: Iterable[str]) -> SessionSeverity:
    """The worst severity of a session: of its causes, and a failure for any verdict but
    ``match`` (a client refuses it)."""
    worst: SessionSeverity = "ok" if verdict == "match" else "failure"
    for cause_id in cause_ids:
        severity = cause_severity(cause_id)
        if _SEVERITY_RANK[severity] > _SEVERITY_RANK[worst]:
            worst = severity
    return worst


def verdict_badge(verdict: str, cause_ids: Iterable[str]) -> tuple[str, SessionSeverity]:
    """The verdict as ``check`` and the TUI show it, never a ✓ beside a finding that fails.

    ``‼ security`` whatever the verdict; a match shows its severity's symbol (``✗ match`` when
    a failing cause holds beside it, ``⚠ match`` beside a warning); any other verdict keeps its
    own symbol (``✗ mismatch``, ``! untrusted``)."""
    severity = session_severity(verdict, cause_ids)
    if severity == "security":
        return f"{SEVERITY_SYMBOLS['security']} security", severity
    if verdict == "match":
        return f"{SEVERITY_SYMBOLS[severity]} match", severity
    return verdict_label(verdict), severity


def session_line(d: Diagnosis, *, colour: bool = False) -> str:
    """One line per session: when, protocol, requested host (and where it came from), SNI,
    presented names, verdict and primary cause. ``colour`` wraps the verdict in ANSI colour."""
    return f"{session_time(d.facts)}  {session_line_rest(d, colour=colour)}"


def session_time(f: SessionFacts) -> str:
    """The start of :func:`session_line`: when the session started, to the second."""
    return printable(f.started[:19].replace("T", " "))


def session_line_rest(d: Diagnosis, *, colour: bool = False) -> str:
    """:func:`session_line` after the time: the same for every session in one situation with
    the same protocol, host, host source and SNI (``check`` writes it once for all of them)."""
    f = d.facts
    sni = printable(f.sni) if f.sni is not None else "-"
    names = shown_names(d.presented_names) or "(no certificate)"
    if len(names) > _NAMES_WIDTH:
        names = names[: _NAMES_WIDTH - 3] + "..."
    verdict, severity = verdict_badge(d.verdict, d.cause_ids)
    if colour:
        code = _ANSI_SEVERITY.get(severity) or _ANSI_COLOURS.get(d.verdict, "31")
        verdict = f"\033[{code}m{verdict:<14}\033[0m"
    cause = d.primary.id if d.primary else ""
    host = f"{printable(f.requested_host or '?')} ({printable(f.requested_host_source)})"
    return (
        f"{printable(f.protocol):<10} {host:<40} sni={sni:<24} -> {names:<{_NAMES_WIDTH}} "
        f"{verdict:<14} {cause}"
    )


def shown_prose(text: str) -> str:
    """A sentence of the diagnosis (explanation, fix, evidence, a name check's reason) made
    safe to show: the diagnosis quotes names through ``printable`` already, so this escapes
    only what is still dangerous and never escapes a name twice."""
    return printable(text, escape_backslash=False)


def shown_names(names: tuple[str, ...] | list[str]) -> str:
    """The certificate's presented names (``Diagnosis.presented_names``, already escaped by the
    diagnosis), comma-separated and safe to show."""
    return shown_prose(", ".join(names))


def summary(total: int, failures: int, verdicts: Counter[str], primaries: Counter[str]) -> str:
    """``3 sessions: 2 mismatch, 1 match; 2 failing.`` and, if any, the primary causes."""
    if total == 0:
        return "No sessions recorded."
    parts = ", ".join(f"{n} {v}" for v, n in verdicts.most_common())
    text = f"{total} session{'s' if total != 1 else ''}: {parts}; {failures} failing."
    if primaries:
        text += "\nPrimary causes: " + ", ".join(f"{c} x{n}" for c, n in primaries.most_common())
    return text


@dataclass(frozen=True)
class Explanation:
    """What to tell a person about one finding: why it happened, how to fix it, where to read."""

    id: str
    title: str
    severity: str
    why: str  # the explanation, with the session's own names
    fix: str
    see: tuple[str, ...]  # citations a person can look up, e.g. "RFC 6125 §6.4.3"

    @classmethod
    def of(cls, finding: Finding) -> Explanation:
        cause = finding.cause
        return cls(
            id=finding.id,
            title=cause.title,
            severity=cause.severity,
            why=shown_prose(finding.explanation),
            fix=shown_prose(finding.fix),
            see=tuple(str(c) for c in cause.citations),
        )

    @property
    def see_text(self) -> str:
        """The citations on one line, ``;``-separated (empty when there are none)."""
        return "; ".join(self.see)


def explanation_lines(finding: Finding, *, indent: str = "") -> list[str]:
    """``[id] title``, then ``why:``, ``fix:`` and (when cited) ``see:`` two spaces deeper."""
    e = Explanation.of(finding)
    lines = [
        f"{indent}[{e.id}] {e.title}",
        f"{indent}  why: {e.why}",
        f"{indent}  fix: {e.fix}",
    ]
    if e.see:
        lines.append(f"{indent}  see: {e.see_text}")
    return lines


def three_names(d: Diagnosis, *, source_words: Mapping[str, str] | None = None) -> list[str]:
    """The three names side by side (Microsoft KB Q198564), each with where it came from: the
    client's (and its source, as ``source_words`` says it, else its id), what DNS said (CNAME
    chain and addresses per resolver, PTR, SRV, MX) and the certificate's. [] when the session
    has no DNS facts."""
    f = d.facts
    if f.dns is None:
        return []
    source = (source_words or {}).get(f.requested_host_source, f.requested_host_source)
    client = f"{printable(f.requested_host or '?')} ({printable(source)})"
    dns = [printable(line) for line in dns_summary(f.dns, f.requested_host)] or ["(no answer)"]
    return [
        f"client:      {client}",
        f"DNS:         {dns[0]}",
        *(f"             {line}" for line in dns[1:]),
        f"certificate: {shown_names(d.presented_names) or '(no certificate)'}",
    ]


def explain(d: Diagnosis, *, indent: str = "    ") -> str:
    """Every finding of the session as a "why / fix / see" block (``check --explain``), then
    the anchor its chain was trusted through, when it was. With DNS facts, the three names
    (:func:`three_names`) come first."""
    lines = [f"{indent}{line}" for line in three_names(d)]
    lines += [line for f in d.findings for line in explanation_lines(f, indent=indent)]
    if d.anchor is not None:
        lines.append(f"{indent}{anchor_line(d)}")
    return "\n".join(lines)


def anchor_line(d: Diagnosis) -> str:
    """``trusted through: 'CN=Root' (SHA-256 …), from this recording's header``, or ""."""
    if d.anchor is None:
        return ""
    return f"trusted through: {shown_prose(d.anchor.describe())}"


def recorded_anchors_note(count: int) -> str:
    """The line ``check`` adds when sessions were trusted through a recording's own CAs."""
    sessions = f"{count} session{'s' if count != 1 else ''}"
    return (
        f"{sessions} trusted through CA certificates recorded in the recording's own header "
        "(the CAs the proxy judged with); --explain names each anchor, --ignore-recorded-ca "
        "judges without them."
    )


def describe(d: Diagnosis) -> str:
    """The verdict on a session with what was asked and presented, then every finding's
    explanation, fix and citations (the pytest plugin's failure message)."""
    f = d.facts
    sni = printable(f.sni) if f.sni is not None else "none"
    asked = "None" if f.requested_host is None else f"'{printable(f.requested_host)}'"
    header = (
        f"certmatch: session {printable(f.id)} ({printable(f.protocol)}, "
        f"{printable(f.tls_kind)} TLS to {printable(str(f.server_address))}): "
        f"the client asked for {asked} ({printable(f.requested_host_source)}, SNI {sni}); "
        f"the certificate names {shown_names(d.presented_names) or 'nothing'}: {d.verdict}"
    )
    anchor = [anchor_line(d)] if d.anchor is not None else []
    return "\n".join(
        [header, *(line for x in d.findings for line in explanation_lines(x)), *anchor]
    )

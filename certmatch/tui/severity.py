"""The badge of a session: its worst severity, never a ✓ for a security finding.

The judge gives a verdict and cause ids; the catalogue (``certmatch.core.causes``) gives each
cause a severity. The badge is the worst of them: a ``match`` with a security finding is a
security badge, and a ``match`` with a failing cause (``requested-host-assumed``,
``proxy-ca-not-trusted``...) a failure badge, so neither looks like a pass. Only a match with
no failing cause keeps its ✓.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from certmatch.core.causes import CAUSES
from certmatch.core.report import VERDICT_SYMBOLS
from certmatch.tui import colours

Severity = Literal["security", "failure", "warning", "ok"]

SEVERITY_SYMBOLS: dict[Severity, str] = {
    "security": "‼",
    "failure": "✗",
    "warning": "⚠",
    "ok": "✓",
}
# Styles by severity, the same in the list and the detail's headline.
SEVERITY_STYLES: dict[Severity, str] = {
    "security": colours.ALERT,
    "failure": f"bold {colours.RED}",
    "warning": f"bold {colours.YELLOW}",
    "ok": colours.GREEN,
}
# Without colour (NO_COLOR, TERM=dumb): the symbol says the severity, and a security finding
# is also in reverse video.
MONO_SEVERITY_STYLES: dict[Severity, str] = {
    "security": "bold reverse",
    "failure": "bold",
    "warning": "bold",
    "ok": "",
}
_RANK: dict[Severity, int] = {"ok": 0, "warning": 1, "failure": 2, "security": 3}


def cause_severity(cause_id: str) -> Severity:
    """The catalogue's severity of one cause (an unknown id counts as a failure)."""
    cause = CAUSES.get(cause_id)
    return cause.severity if cause is not None else "failure"


def severity_of(verdict: str, cause_ids: Iterable[str]) -> Severity:
    """The worst severity of a session: of its causes, and a failure for any verdict but
    ``match`` (a client refuses it)."""
    worst: Severity = "ok" if verdict == "match" else "failure"
    for cause_id in cause_ids:
        severity = cause_severity(cause_id)
        if _RANK[severity] > _RANK[worst]:
            worst = severity
    return worst


def badge(verdict: str, cause_ids: Iterable[str]) -> tuple[str, Severity]:
    """The verdict column's text and the severity that styles it.

    ``‼ security`` whatever the verdict; a match shows its severity's symbol (``✗ match`` when
    a failing cause holds beside it); any other verdict keeps its own symbol
    (``✗ mismatch``, ``! untrusted``)."""
    severity = severity_of(verdict, cause_ids)
    if severity == "security":
        return f"{SEVERITY_SYMBOLS['security']} security", severity
    if verdict == "match":
        return f"{SEVERITY_SYMBOLS[severity]} match", severity
    return f"{VERDICT_SYMBOLS.get(verdict, '?')} {verdict}", severity

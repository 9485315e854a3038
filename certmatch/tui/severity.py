"""The badge of a session, styled: its worst severity, never a ✓ for a security finding.

The judge gives a verdict and cause ids; the catalogue (``certmatch.core.causes``) gives each
cause a severity. The badge is the worst of them: a ``match`` with a security finding is a
security badge, and a ``match`` with a failing cause (``requested-host-assumed``,
``proxy-ca-not-trusted``...) a failure badge, so neither looks like a pass. Only a match with
no failing cause keeps its ✓. The badge itself is :func:`certmatch.core.report.verdict_badge`,
which ``check`` prints too; this module adds the TUI's styles.
"""

from __future__ import annotations

from collections.abc import Sequence

from certmatch.core.report import SEVERITY_SYMBOLS, cause_severity
from certmatch.core.report import SessionSeverity as Severity
from certmatch.core.report import session_severity as severity_of
from certmatch.core.report import verdict_badge as badge
from certmatch.tui import colours

__all__ = [
    "MONO_SEVERITY_STYLES",
    "SEVERITY_STYLES",
    "SEVERITY_SYMBOLS",
    "Severity",
    "badge",
    "cause_severity",
    "further_causes",
    "severity_of",
]

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


def further_causes(primary: str, causes: Sequence[str]) -> tuple[list[str], list[str]]:
    """The causes besides ``primary`` that its ``+N`` counts, and the warnings it leaves out.

    Beside a failing or security primary, only further failures count: a warning beside it
    (``ca-profile-violation``, ``wrong-order``) is told in the detail, not in the count. The
    list's row and the detail's headline both count this way, so their ``+N`` agree."""
    further = [c for c in causes if c != primary]
    if cause_severity(primary) == "warning":
        return further, []
    counted = [c for c in further if cause_severity(c) != "warning"]
    return counted, [c for c in further if cause_severity(c) == "warning"]

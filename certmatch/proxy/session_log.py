"""What the proxy says about each recorded session: its log line, and the recording header's
CA files. Shared by the capture and observe addons, so that observing does not load the
intercepting proxy's code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from mitmproxy import ctx

from certmatch.core.diagnosis import Diagnosis
from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judgement
from certmatch.core.report import shown_names
from certmatch.core.text import printable

logger = logging.getLogger("certmatch")


def ca_certificate_pems(ca_files: Sequence[str]) -> list[str]:
    """The text of each CA file (already read once by ``TrustStore.load``), for the
    recording's header: ``check`` then judges with the anchors the proxy judged with."""
    return [Path(path).read_text(encoding="ascii", errors="replace") for path in ca_files]


def log_verdict(facts: SessionFacts, verdict: Diagnosis | Judgement | None) -> None:
    """One log line per recorded session that fails or has a finding: what was asked, what
    was presented, the verdict. A clean match is logged only with ``termlog_verbosity=debug``:
    each line costs the proxy some 2 % of a handshake's CPU (mitmproxy formats it twice and
    runs an event through every addon for it), and the recording holds every session."""
    if verdict is None or verdict.failed:
        logger.warning(verdict_log_line(facts, verdict))
    elif _has_causes(verdict) or getattr(ctx.options, "termlog_verbosity", "") == "debug":
        logger.info(verdict_log_line(facts, verdict))


def _has_causes(verdict: Diagnosis | Judgement) -> bool:
    if isinstance(verdict, Judgement):
        return bool(verdict.causes)
    return bool(verdict.findings)


def verdict_log_line(facts: SessionFacts, verdict: Diagnosis | Judgement | None) -> str:
    """The log line for a recorded session, every name from the network escaped so that a
    hostile SNI or certificate name cannot drive the terminal showing the log."""
    host = printable(str(facts.requested_host))
    if verdict is None:
        return f"certmatch: {host}: no verdict ({printable('; '.join(facts.notes))})"
    names = shown_names(verdict.presented_names) or "no certificate"
    line = (
        f"certmatch: {printable(facts.protocol)} {host} "
        f"[{printable(facts.requested_host_source)}, SNI {printable(facts.sni or 'none')}] "
        f"-> {names}: {verdict.verdict}"
    )
    primary = verdict.primary.id if isinstance(verdict, Diagnosis) and verdict.primary else None
    if isinstance(verdict, Judgement):
        primary = verdict.primary or None
    if primary:
        line += f" ({primary})"
    return line

"""Judge one session: ``diagnose(facts, store)``, and what a diagnosis holds.

A convenience over :class:`certmatch.core.judge.Judge`, for callers that judge
a session now and then: it uses the judge shared by everyone who judges
against the same store. The verdict, the findings and their explanation come
from :mod:`certmatch.core.findings`; the catalogue of causes is
:mod:`certmatch.core.causes`.

The verdicts and when a ``match`` still fails are described in
:mod:`certmatch.core.findings`.
"""

from __future__ import annotations

from certmatch.core.facts import SessionFacts
from certmatch.core.findings import VERDICTS, Diagnosis, Finding, Verdict
from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore

__all__ = ["VERDICTS", "Diagnosis", "Finding", "Verdict", "diagnose"]


def diagnose(facts: SessionFacts, store: TrustStore) -> Diagnosis:
    """Judge one session against ``store``. Never raises on odd facts: oddities become findings."""
    return Judge.for_store(store).diagnose(facts)

"""Judge one session: ``diagnose(facts, store)``, and what a diagnosis holds.

A convenience over :class:`certmatch.core.judge.Judge`, for callers that judge
a session now and then: it uses the judge shared by everyone who judges
against the same store. The verdict, the findings and their explanation come
from :mod:`certmatch.core.findings`; the catalogue of causes is
:mod:`certmatch.core.causes`.

Verdicts:
``match`` the names pass; ``legacy-match`` only a legacy rule (CN-ID)
accepts them; ``mismatch`` the names fail; ``untrusted`` names pass but
trust or validity fails; ``error`` no certificate was obtained. A ``match``
still fails when a failing cause holds beside it: the client refused
certmatch's own CA, or the name judged against was assumed, not given by the
client (``requested-host-assumed``).
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

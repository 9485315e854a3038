"""The list's view of a diagnosis, computed once per distinct situation.

``diagnose`` parses the chain and checks trust for every session, about 2 ms
each: 100,000 sessions would take minutes. But a busy proxy records the same
few servers over and over, so sessions are grouped by everything the verdict
can depend on, and each group is diagnosed once:

- the facts a verdict and its causes are computed from: the chain, the
  requested host, the SNI (client's and upstream), the TLS kind and version,
  the errors, the SNI probe and the STARTTLS facts. The others (id, client,
  server address, protocol, how the host was learnt, notes) only fill in the
  prose, which the list does not show; ``tests/test_tui.py`` checks that every
  cached judgement equals a fresh diagnosis on the sample recordings;
- the capture time only through certificate validity: the key holds the
  position of the capture time among the validity boundaries (notBefore,
  notAfter) of every presented certificate and every trusted root, so two
  sessions share a judgement only if every validity check comes out the same.

The detail pane diagnoses its one session in full, so its prose is exact.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from certmatch.core.certificates import parse_chain
from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.trust import TrustStore

NAMES_WIDTH = 40


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the session list shows and filters on, shared by all sessions of one situation."""

    verdict: str
    failed: bool
    primary: str  # cause id, "" when there is none
    causes: tuple[str, ...]
    names: str  # presented names, shortened for the list
    leaf_sha256: str  # "" when there is no certificate


def shorten_names(names: tuple[str, ...], width: int = NAMES_WIDTH) -> str:
    """ "a, b +3": as many names as fit in ``width``, then how many were left out."""
    if not names:
        return "(no certificate)"
    shown: list[str] = []
    used = 0
    for index, name in enumerate(names):
        rest = len(names) - index - 1
        suffix = len(f" +{rest}") if rest else 0
        cost = len(name) + (2 if shown else 0)
        if shown and used + cost + suffix > width:
            return ", ".join(shown) + f" +{len(names) - index}"
        shown.append(name)
        used += cost
    return ", ".join(shown)


def _timestamp(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class JudgementCache:
    """Diagnoses sessions, reusing the judgement of an earlier session in the same situation."""

    def __init__(self, store: TrustStore) -> None:
        self.store = store
        self._judgements: dict[tuple[Any, ...], Judgement] = {}
        self._chain_bounds: dict[tuple[str, ...], list[float]] = {}
        self._root_bounds = sorted(
            {
                moment.timestamp()
                for root in store.roots
                for moment in (root.not_valid_before_utc, root.not_valid_after_utc)
            }
        )
        self.diagnosed = 0  # how many full diagnoses were run (for the benchmark)

    def __len__(self) -> int:
        return len(self._judgements)

    def judge(self, facts: SessionFacts) -> Judgement:
        """The judgement for ``facts``; a full diagnosis only for a new situation."""
        chain = tuple(facts.chain)
        key = (self._situation(facts, chain), self._time_bucket(facts, chain))
        judgement = self._judgements.get(key)
        if judgement is None:
            judgement = self._judgements[key] = self._diagnose(facts)
        return judgement

    def _diagnose(self, facts: SessionFacts) -> Judgement:
        self.diagnosed += 1
        d = diagnose(facts, self.store)
        return Judgement(
            verdict=d.verdict,
            failed=d.failed,
            primary=d.primary.id if d.primary else "",
            causes=d.cause_ids,
            names=shorten_names(d.presented_names),
            leaf_sha256=d.certificates[0].sha256 if d.certificates else "",
        )

    @staticmethod
    def _situation(f: SessionFacts, chain: tuple[str, ...]) -> tuple[Any, ...]:
        probe = f.sni_probe
        starttls = f.starttls
        return (
            chain,
            f.requested_host,
            f.sni,
            f.upstream_sni,
            f.tls_kind,
            f.tls_version,
            f.server_error,
            f.client_error,
            (probe.sni, tuple(probe.chain), probe.error) if probe else None,
            (
                starttls.server_offered,
                starttls.client_requested,
                starttls.server_reply,
                starttls.plaintext_auth,
                starttls.injection,
                starttls.phase,
            )
            if starttls
            else None,
        )

    def _time_bucket(self, facts: SessionFacts, chain: tuple[str, ...]) -> tuple[int, ...]:
        moment = _timestamp(facts.started)
        if moment is None:
            return (-1,)  # the diagnosis uses "now" for an unreadable time: judged alike
        bounds = self._chain_bounds.get(chain)
        if bounds is None:
            bounds = self._chain_bounds[chain] = sorted(
                {
                    when.timestamp()
                    for summary in parse_chain(chain).summaries
                    for when in (summary.not_before, summary.not_after)
                    if when is not None
                }
            )
        # left and right positions differ exactly when the time equals a boundary.
        return (
            bisect.bisect_left(bounds, moment),
            bisect.bisect_right(bounds, moment),
            bisect.bisect_left(self._root_bounds, moment),
            bisect.bisect_right(self._root_bounds, moment),
        )

"""The judge: diagnoses sessions against one trust store, and owns every cache for it.

A busy proxy records the same few servers over and over, so the judge
parses, matches and validates each distinct chain, name and time bucket once,
and reuses a whole judgement (and the decision behind it) for every session in the
same situation; only the explanation, which names this session's own host and server,
is written afresh for each session.

API::

    judge = Judge(store)
    judge.diagnose(facts) -> Diagnosis     # full, explained with this session's own names
    judge.judgement(facts) -> Judgement    # light: verdict, failed, primary, causes, names, leaf
    judge.decision(facts) -> Decision      # the causes and their details, before explaining
    judge.key(facts) -> Hashable           # what judgement() is cached by; cheap
    judge.diagnosed                        # how many decisions were computed (cache misses)
    len(judge)                             # how many judgements are remembered
    Judge.for_store(store) -> Judge        # one shared judge per store (diagnose() uses it)
    JudgesByRecording(anchors)(path)       # the judge for one recording (its header's CAs)

The key is derived from the declaration of the verdict fields in
:mod:`certmatch.core.facts` (field metadata), never from a hand-kept list, and
the decision itself sees only those fields (:func:`facts.verdict_part
<certmatch.core.facts.verdict_part>`), so no cache can drift from ``diagnose``.
The capture time enters only through certificate validity: the key holds where
it falls in the validity period of every presented certificate and of every
trusted root that could have issued one (before, within, after), so two
sessions share a judgement only when every validity check comes out the same
(when those periods cannot be read, the key holds the exact time). When some
certificate is outside its period, decisions and trust results are keyed by the exact
time too, since their details name it; those rarely come again, so they live in small
caches of their own and never push out the shared ones.

Every cache has a size limit; the oldest entries go first.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from certmatch.core.anchors import RecordingAnchors, TrustAnchor, anchor_of
from certmatch.core.certificates import CertificateSummary, ParsedChain, parse_chain
from certmatch.core.dns_facts import DnsFacts
from certmatch.core.facts import CAPTURE_TIME_FIELD, VERDICT_FIELDS, SessionFacts
from certmatch.core.findings import (
    Decision,
    Diagnosis,
    Verdict,
    capture_time,
    decide,
    diagnose_with,
    explain,
    is_failure,
    presented_names,
)
from certmatch.core.identity import IdentityResult, PresentedIdentifiers, check_identity
from certmatch.core.recording import RecordingError, open_recording
from certmatch.core.trust import TrustResult, TrustStore, assess_trust

_VALUE_FIELDS = tuple(name for name in VERDICT_FIELDS if name != CAPTURE_TIME_FIELD)

# A validity period: (notBefore, notAfter), either None when unknown.
_Window = tuple[datetime | None, datetime | None]


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict and causes of a session, without the prose; shared by one situation."""

    verdict: Verdict
    failed: bool
    primary: str  # cause id, "" when there is none
    causes: tuple[str, ...]
    presented_names: tuple[str, ...]  # the leaf's names, () without a certificate
    leaf_sha256: str  # "" when there is no certificate
    certificates: tuple[CertificateSummary, ...] = ()  # the chain as presented, summarised
    anchor: TrustAnchor | None = None  # what the chain was trusted through, when it was


class Judge:
    """Judges sessions against ``store``, remembering what repeats (see the module docstring)."""

    # Judges by id(store); each holds its store, so an id is never reused while listed.
    _shared: ClassVar[dict[int, Judge]] = {}

    def __init__(self, store: TrustStore, *, size: int = 4096) -> None:
        self.store = store
        self.diagnosed = 0
        self._chains = lru_cache(maxsize=size)(parse_chain)
        self._identities = lru_cache(maxsize=4 * size)(check_identity)
        self._presented = _Bounded[tuple[str, ...], PresentedIdentifiers | str](size)
        self._windows = _Bounded[tuple[str, ...], _Periods | None](size)
        self._trust = _Bounded[Hashable, TrustResult](2 * size)
        self._judgements = _Bounded[Hashable, Judgement](16 * size)
        self._decisions = _Bounded[Hashable, Decision](4 * size)
        # Results that name an exact time rarely come again: a few, so they never crowd
        # out (or grow as large as) the ones that do.
        self._trust_at = _Bounded[Hashable, TrustResult](_AT_AN_EXACT_TIME)
        # per chain and bucket outside some period: the first time judged, and its result
        self._trust_bucket = _Bounded[Hashable, tuple[datetime, TrustResult]](size)
        self._decisions_at = _Bounded[Hashable, Decision](_AT_AN_EXACT_TIME)

    @classmethod
    def for_store(cls, store: TrustStore) -> Judge:
        """The judge shared by everyone who judges against ``store``."""
        judge = cls._shared.get(id(store))
        if judge is None or judge.store is not store:
            if len(cls._shared) >= 8:  # stores are few; forget the oldest
                cls._shared.pop(next(iter(cls._shared)), None)
            judge = cls._shared[id(store)] = cls(store)
        return judge

    def __len__(self) -> int:
        return len(self._judgements)

    # -- judging ------------------------------------------------------------------------------

    def diagnose(self, facts: SessionFacts) -> Diagnosis:
        """Judge one session in full; never raises on odd facts."""
        decision = self.decision(facts)
        try:
            return explain(facts, decision, self)
        except Exception:  # noqa: BLE001 - diagnose_with makes it a malformed-certificate finding
            return diagnose_with(facts, self)

    def decision(self, facts: SessionFacts) -> Decision:
        """Which causes hold for ``facts``, primary first, with their details; computed once
        per :meth:`key`, or per key and exact time when some certificate is out of its
        period (the details then name the time)."""
        key, at = self._key_and_time(facts)
        found = self._decisions.get(key) if at is None else self._decisions_at.get((key, at))
        return found or self._decide(facts, key, at)

    def judgement(self, facts: SessionFacts) -> Judgement:
        """The verdict and causes of ``facts``; computed once per :meth:`key`."""
        key, at = self._key_and_time(facts)
        judgement = self._judgements.get(key)
        if judgement is None:
            self._decide(facts, key, at)
            judgement = self._judgements.get(key)
        return judgement  # type: ignore[no-any-return]

    def key(self, facts: SessionFacts) -> Hashable:
        """Everything a verdict and its causes depend on: the verdict fields, and where the
        capture time falls among the validity periods that bear on the chain."""
        return self._key_and_time(facts)[0]

    def _key_and_time(self, facts: SessionFacts) -> tuple[Hashable, datetime | None]:
        """The key, and the exact capture time when the causes' details name it."""
        values = tuple(
            [v if type(v) is str or v is None else hashable(v) for v in _verdict_values(facts)]
        )
        if facts.dns is not None:  # which SRV services apply (facts.verdict_part keeps it too)
            values = (*values, facts.protocol)
        at = capture_time(facts)
        chain = values[_CHAIN_INDEX]  # the chain as a tuple: hashable() of a list of strings
        positions = self._positions(chain if type(chain) is tuple else tuple(facts.chain), at)
        if positions is None:
            return (values, at), None
        return (values, positions), at if any(positions) else None

    def _decide(self, facts: SessionFacts, key: Hashable, at: datetime | None) -> Decision:
        self.diagnosed += 1
        d = decide(facts, self)
        if at is None:
            self._decisions.put(key, d)
        else:
            self._decisions_at.put((key, at), d)
        if self._judgements.get(key) is None:
            self._judgements.put(
                key,
                Judgement(
                    verdict=d.verdict,
                    failed=is_failure(d.verdict, d.cause_ids),
                    primary=d.cause_ids[0] if d.cause_ids else "",
                    causes=d.cause_ids,
                    presented_names=presented_names(d.certificates),
                    leaf_sha256=d.certificates[0].sha256 if d.certificates else "",
                    certificates=d.certificates,
                    anchor=d.anchor,
                ),
            )
        return d

    # -- the parts deciding needs (certmatch.core.findings.Parts) ------------------------------

    def chain(self, chain: tuple[str, ...]) -> ParsedChain:
        """The chain parsed, once per distinct chain."""
        return self._chains(chain)

    def presented(self, chain: tuple[str, ...]) -> PresentedIdentifiers:
        """The leaf's identifiers; ValueError (its reason remembered too) when unreadable."""
        found = self._presented.get(chain)
        if found is None:
            leaf = self._chains(chain).leaf
            try:
                if leaf is None:
                    raise ValueError("the leaf certificate cannot be parsed")
                found = PresentedIdentifiers.from_certificate(leaf)
            except ValueError as exc:
                found = str(exc)
            self._presented.put(chain, found)
        if isinstance(found, PresentedIdentifiers):
            return found
        raise ValueError(found)

    def identity(self, reference: str, presented: PresentedIdentifiers) -> IdentityResult:
        """check_identity, once per reference and set of identifiers."""
        return self._identities(reference, presented)

    def trust(self, chain: tuple[str, ...], at: datetime) -> TrustResult:
        """assess_trust at ``at``, once per chain and validity bucket of ``at``.

        When some certificate is out of its period the result names ``at`` ("checked at
        …"); it is then made once per bucket and told again with this session's time
        (:func:`_told_at`), which is everything that differs within a bucket."""
        positions = self._positions(chain, at)
        if positions is not None and not any(positions):
            result = self._trust.get((chain, positions))
            if result is None:
                result = assess_trust(self._chains(chain), at, self.store)
                self._trust.put((chain, positions), result)
            return result  # type: ignore[no-any-return]
        result = self._trust_at.get((chain, positions, at))
        if result is not None:
            return result  # type: ignore[no-any-return]
        first = self._trust_bucket.get((chain, positions)) if positions is not None else None
        if first is not None:
            result = _told_at(first[1], first[0], at)
        if result is None:
            result = assess_trust(self._chains(chain), at, self.store)
            if positions is not None:
                self._trust_bucket.put((chain, positions), (at, result))
        self._trust_at.put((chain, positions, at), result)
        return result

    def anchor(self, chain: tuple[str, ...], trust: TrustResult) -> TrustAnchor | None:
        """The store certificate a trusted chain reached, and where it came from."""
        return anchor_of(self._chains(chain), trust, self.store)

    # -- the capture-time bucket ---------------------------------------------------------------

    def _positions(self, chain: tuple[str, ...], at: datetime) -> tuple[int, ...] | None:
        """-1 before, 0 within (or unknown), 1 after each validity period bearing on ``chain``.

        None when the periods cannot be read: then only the exact time will do.
        """
        periods = self._windows.get(chain, _MISSING)
        if periods is _MISSING:
            periods = _Periods.of(self._validity_windows(chain))
            self._windows.put(chain, periods)
        if periods is None:
            return None
        if periods.latest_start <= at <= periods.earliest_end:  # the usual case: within all
            return periods.within
        return tuple(
            -1 if start and at < start else 1 if end and at > end else 0
            for start, end in periods.windows
        )

    def _validity_windows(self, chain: tuple[str, ...]) -> tuple[_Window, ...] | None:
        """The presented certificates' periods, then those of the roots that could issue them."""
        parsed = self._chains(chain)
        windows: list[_Window] = [(s.not_before, s.not_after) for s in parsed.summaries]
        try:
            for cert in parsed.certificates:
                if cert is None:
                    continue
                try:
                    roots = self.store.roots_named(cert.issuer)
                except ValueError:  # an issuer name cryptography cannot decode: no root matches
                    continue
                windows += [(r.not_valid_before_utc, r.not_valid_after_utc) for r in roots]
        except Exception:  # noqa: BLE001 - hostile DER; the exact time keys it instead
            return None
        return tuple(windows)


def _told_at(result: TrustResult, was: datetime, at: datetime) -> TrustResult | None:
    """``result``, assessed at ``was``, as assessed at ``at`` in the same validity bucket:
    only the "checked at" time of its problems differs. None (assess again) unless each
    mention of ``was`` is exactly that phrase, so a result worded otherwise is never
    mistold (tests/test_judge.py compares this with assessing afresh)."""
    old, new = _checked_at(was), _checked_at(at)
    if old == new:
        return result
    moment = old.removeprefix("checked at ")
    problems = []
    told = False
    for problem in result.problems:
        detail = problem.detail.replace(old, new)
        if moment in detail or moment[:10] in detail.replace(new, ""):
            return None  # the time (or its day) mentioned some other way
        told |= detail != problem.detail
        problems.append(dataclasses.replace(problem, detail=detail))
    if not told:
        return None  # out of its period, yet no time named: worded in a way not known here
    return dataclasses.replace(result, problems=tuple(problems))


def _checked_at(at: datetime) -> str:
    return f"checked at {at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}"


class JudgesByRecording:
    """``judges(path)``: the judge for one recording's sessions, with its header's CAs
    trusted (unless switched off), one judge per distinct set of them."""

    def __init__(self, anchors: RecordingAnchors) -> None:
        self.anchors = anchors
        self._judges: dict[int, Judge] = {}

    def __call__(self, path: str | Path) -> Judge:
        try:
            pems = open_recording(path)[1].ca_certificates
        except RecordingError:  # not written yet, or not a recording: the reader says why
            pems = []
        store, _recorded = self.anchors.store_for(pems)
        judge = self._judges.get(id(store))
        if judge is None:
            judge = self._judges[id(store)] = Judge(store)
        return judge


_MISSING: Any = object()
_AT_AN_EXACT_TIME = 64


@dataclass(frozen=True, slots=True)
class _Periods:
    """The validity periods bearing on a chain, and the span within all of them."""

    windows: tuple[_Window, ...]
    latest_start: datetime
    earliest_end: datetime
    within: tuple[int, ...]  # the positions of a time within every period: all 0

    @classmethod
    def of(cls, windows: tuple[_Window, ...] | None) -> _Periods | None:
        if windows is None:
            return None
        starts = [start for start, _ in windows if start]
        ends = [end for _, end in windows if end]
        return cls(
            windows,
            max(starts, default=datetime.min.replace(tzinfo=UTC)),
            min(ends, default=datetime.max.replace(tzinfo=UTC)),
            (0,) * len(windows),
        )


_verdict_values = operator.attrgetter(*_VALUE_FIELDS)
_CHAIN_INDEX = _VALUE_FIELDS.index("chain")
_FIELDS_OF: dict[type, tuple[str, ...]] = {}


def hashable(value: Any) -> Hashable:
    """``value`` as something hashable: lists become tuples, dataclasses tuples of fields,
    DNS facts their :meth:`~certmatch.core.dns_facts.DnsFacts.verdict_key` (what their
    :meth:`~certmatch.core.dns_facts.DnsFacts.verdict_view` keeps)."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is DnsFacts:  # what the DNS rules read: no timing, no TTLs (each session differs)
        return ("DnsFacts", value.verdict_key())
    if kind is list:
        items = tuple(value)
        try:
            hash(items)  # a chain: strings only, hashable as it is
        except TypeError:
            return tuple(map(hashable, value))
        return items
    if dataclasses.is_dataclass(kind):
        names = _FIELDS_OF.get(kind)
        if names is None:
            names = _FIELDS_OF[kind] = tuple(f.name for f in dataclasses.fields(kind))
        return (kind.__name__, *(hashable(getattr(value, name)) for name in names))
    return value


class _Bounded[K, V]:
    """A dict with at most ``limit`` entries; the oldest goes when a new one comes."""

    __slots__ = ("_data", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, default: Any = None) -> Any:
        return self._data.get(key, default)

    def put(self, key: K, value: V) -> None:
        data = self._data
        if len(data) >= self.limit and key not in data:
            try:
                del data[next(iter(data))]
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                pass
        data[key] = value

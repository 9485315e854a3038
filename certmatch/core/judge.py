"""The judge: diagnoses sessions against one trust store, and owns every cache for it.

A busy proxy records the same few servers over and over, so the judge
parses, matches and validates each distinct chain, name and time bucket once,
and reuses a whole judgement for every session in the same situation.

API::

    judge = Judge(store)
    judge.diagnose(facts) -> Diagnosis     # full, explained with this session's own names
    judge.judgement(facts) -> Judgement    # light: verdict, failed, primary, causes, names, leaf
    judge.key(facts) -> Hashable           # what judgement() is cached by; cheap
    judge.diagnosed                        # how many judgements were computed (cache misses)
    len(judge)                             # how many judgements are remembered
    Judge.for_store(store) -> Judge        # one shared judge per store (diagnose() uses it)

The key is derived from the declaration of the verdict fields in
:mod:`certmatch.core.facts` (field metadata), never from a hand-kept list, and
the decision itself sees only those fields (:func:`facts.verdict_part
<certmatch.core.facts.verdict_part>`), so no cache can drift from ``diagnose``.
The capture time enters only through certificate validity: the key holds where
it falls in the validity period of every presented certificate and of every
trusted root that could have issued one (before, within, after), so two
sessions share a judgement only when every validity check comes out the same
(when those periods cannot be read, the key holds the exact time). Trust results are keyed the same way, plus the exact time when some
certificate is outside its period (the problem's text names the time).

Every cache has a size limit; the oldest entries go first.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

from certmatch.core.certificates import ParsedChain, parse_chain
from certmatch.core.facts import CAPTURE_TIME_FIELD, VERDICT_FIELDS, SessionFacts
from certmatch.core.findings import (
    Diagnosis,
    Verdict,
    capture_time,
    decide,
    diagnose_with,
    is_failure,
    presented_names,
)
from certmatch.core.identity import IdentityResult, PresentedIdentifiers, check_identity
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
        self._windows = _Bounded[tuple[str, ...], tuple[_Window, ...] | None](size)
        self._trust = _Bounded[Hashable, TrustResult](2 * size)
        self._judgements = _Bounded[Hashable, Judgement](16 * size)

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
        return diagnose_with(facts, self)

    def judgement(self, facts: SessionFacts) -> Judgement:
        """The verdict and causes of ``facts``; computed once per :meth:`key`."""
        key = self.key(facts)
        judgement = self._judgements.get(key)
        if judgement is None:
            self.diagnosed += 1
            d = decide(facts, self)
            judgement = Judgement(
                verdict=d.verdict,
                failed=is_failure(d.verdict, d.cause_ids),
                primary=d.cause_ids[0] if d.cause_ids else "",
                causes=d.cause_ids,
                presented_names=presented_names(d.certificates),
                leaf_sha256=d.certificates[0].sha256 if d.certificates else "",
            )
            self._judgements.put(key, judgement)
        return judgement

    def key(self, facts: SessionFacts) -> Hashable:
        """Everything a verdict and its causes depend on: the verdict fields, and where the
        capture time falls among the validity periods that bear on the chain."""
        values = tuple(map(_frozen, _verdict_values(facts)))
        at = capture_time(facts)
        positions = self._positions(tuple(facts.chain), at)
        return values, at if positions is None else positions

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
        """assess_trust at ``at``, once per chain and validity bucket of ``at``."""
        positions = self._positions(chain, at)
        key = (chain, positions, at if positions is None or any(positions) else None)
        result = self._trust.get(key)
        if result is None:
            result = assess_trust(self._chains(chain), at, self.store)
            self._trust.put(key, result)
        return result

    # -- the capture-time bucket ---------------------------------------------------------------

    def _positions(self, chain: tuple[str, ...], at: datetime) -> tuple[int, ...] | None:
        """-1 before, 0 within (or unknown), 1 after each validity period bearing on ``chain``.

        None when the periods cannot be read: then only the exact time will do.
        """
        windows = self._windows.get(chain, _MISSING)
        if windows is _MISSING:
            windows = self._validity_windows(chain)
            self._windows.put(chain, windows)
        if windows is None:
            return None
        return tuple(
            -1 if start and at < start else 1 if end and at > end else 0 for start, end in windows
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


_MISSING: Any = object()


_verdict_values = operator.attrgetter(*_VALUE_FIELDS)
_FIELDS_OF: dict[type, tuple[str, ...]] = {}


def _frozen(value: Any) -> Hashable:
    """``value`` as something hashable: lists become tuples, dataclasses tuples of fields."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is list:
        return tuple(map(_frozen, value))
    if dataclasses.is_dataclass(kind):
        names = _FIELDS_OF.get(kind)
        if names is None:
            names = _FIELDS_OF[kind] = tuple(f.name for f in dataclasses.fields(kind))
        return (kind.__name__, *(_frozen(getattr(value, name)) for name in names))
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

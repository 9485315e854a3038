"""Rows of the session list, the filter language, and the grouped view.

A row is small on purpose (no certificate, no prose): a million of them
must fit in memory. The full facts are read back from the recording when a
session is shown in detail.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from certmatch.core.causes import CAUSES
from certmatch.core.diagnosis import VERDICTS
from certmatch.core.facts import PROTOCOLS
from certmatch.core.judge import Judgement
from certmatch.core.report import VERDICT_SYMBOLS
from certmatch.tui.severity import Severity, severity_of


class Row:
    """One session as the list shows it."""

    __slots__ = (
        "client",
        "host",
        "host_source",
        "judgement",
        "offset",
        "protocol",
        "sni",
        "source",
        "time",
    )

    def __init__(
        self,
        source: int,
        offset: int,
        time: str,
        protocol: str,
        client: str,
        host: str,
        host_source: str,
        sni: str | None,
        judgement: Judgement,
    ) -> None:
        self.source = source  # index of the recording file
        self.offset = offset  # byte offset of the session's line in it
        self.time = time
        self.protocol = protocol
        self.client = client
        self.host = host
        self.host_source = host_source
        self.sni = sni
        self.judgement = judgement


class Group:
    """Sessions with the same requested host, leaf certificate and primary cause."""

    __slots__ = ("count", "first", "host", "judgement", "last", "protocols")

    def __init__(self, host: str, judgement: Judgement, first: int) -> None:
        self.host = host
        self.judgement = judgement
        self.count = 0
        self.first = first  # row index of the earliest session
        self.last = first  # row index of the latest session
        self.protocols: set[str] = set()


class FilterError(ValueError):
    """A filter the user typed that cannot be understood; the message says how to fix it."""


_FIELDS = {
    "host": "host",
    "h": "host",
    "protocol": "protocol",
    "proto": "protocol",
    "p": "protocol",
    "cause": "cause",
    "c": "cause",
    "verdict": "verdict",
    "v": "verdict",
    "severity": "severity",
    "s": "severity",
}
_SYMBOL_VERDICTS = {symbol: verdict for verdict, symbol in VERDICT_SYMBOLS.items()}
_SEVERITIES: tuple[Severity, ...] = ("security", "failure", "warning", "ok")
# What people type for a protocol certmatch names otherwise: the port's TLS variant.
_PROTOCOL_HINTS = {
    "imaps": "imap",
    "pop3s": "pop3",
    "pops": "pop3",
    "pop": "pop3",
    "smtps": "submission",
    "msa": "submission",
    "ldaps": "ldap",
    "nntps": "nntp",
}

FILTER_HELP = (
    "words match the requested host or SNI; host:NAME protocol:imap cause:ID verdict:mismatch "
    "severity:security; commas mean 'or' (protocol:imap,pop3); ! before a value or a word "
    "excludes it (host:!example.org, protocol:!smtp, !test); cause: also takes the start of "
    "ids (cause:wildcard is every wildcard-* cause); empty clears the filter"
)


def _did_you_mean(value: str, choices: Iterable[str], hint: str | None = None) -> str:
    """`` (did you mean x?)`` from a known hint, close spellings or ids containing ``value``."""
    choices = list(choices)
    near = [hint] if hint else []
    near += [c for c in difflib.get_close_matches(value, choices, n=3) if c not in near]
    near += [c for c in choices if value and value in c and c not in near]
    return f" (did you mean {', '.join(near[:4])}?)" if near else ""


def _causes_for(value: str) -> frozenset[str]:
    """The cause ids ``value`` names: the id itself, or every id it starts."""
    if value in CAUSES:
        return frozenset({value})
    prefixed = frozenset(c for c in CAUSES if c.startswith(value))
    if prefixed:
        return prefixed
    raise FilterError(
        f"unknown cause id {value!r}{_did_you_mean(value, CAUSES)}; a cause filter takes an "
        "id or the start of ids; see ? for the list"
    )


@dataclass(frozen=True)
class Filter:
    """Which sessions to show. Fields combine with AND, values within a field with OR; a value
    after ``!`` excludes (any excluded value rules a session out)."""

    text: str = ""
    hosts: tuple[str, ...] = ()
    protocols: frozenset[str] = field(default_factory=frozenset)
    causes: frozenset[str] = field(default_factory=frozenset)
    verdicts: frozenset[str] = field(default_factory=frozenset)
    severities: frozenset[str] = field(default_factory=frozenset)
    excluded_hosts: tuple[str, ...] = ()
    excluded_protocols: frozenset[str] = field(default_factory=frozenset)
    excluded_causes: frozenset[str] = field(default_factory=frozenset)
    excluded_verdicts: frozenset[str] = field(default_factory=frozenset)
    excluded_severities: frozenset[str] = field(default_factory=frozenset)

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.hosts,
                self.protocols,
                self.causes,
                self.verdicts,
                self.severities,
                self.excluded_hosts,
                self.excluded_protocols,
                self.excluded_causes,
                self.excluded_verdicts,
                self.excluded_severities,
            )
        )

    @classmethod
    def parse(cls, text: str) -> Filter:
        """Parse ``host:x protocol:imap cause:id verdict:mismatch severity:security words``,
        each value maybe after ``!``; FilterError (saying what would be right) if wrong."""
        wanted: dict[str, set[str]] = {name: set() for name in set(_FIELDS.values())}
        unwanted: dict[str, set[str]] = {name: set() for name in set(_FIELDS.values())}
        hosts: list[str] = []
        excluded_hosts: list[str] = []
        for word, what, part, negate in _terms(text):
            if not part:
                raise FilterError(f"nothing after ! in {word!r}; write e.g. !{_EXAMPLES[what]}")
            into = unwanted if negate else wanted
            if what == "host":
                (excluded_hosts if negate else hosts).append(part)
            elif what == "cause":
                into["cause"].update(_causes_for(part))
            elif what == "verdict":
                verdict = _SYMBOL_VERDICTS.get(part, part)
                if verdict not in VERDICTS:
                    raise FilterError(
                        f"unknown verdict {part!r}{_did_you_mean(part, VERDICTS)}; one of "
                        f"{', '.join(VERDICTS)}"
                    )
                into["verdict"].add(verdict)
            elif what == "severity":
                if part not in _SEVERITIES:
                    raise FilterError(
                        f"unknown severity {part!r}{_did_you_mean(part, _SEVERITIES)}; one "
                        f"of {', '.join(_SEVERITIES)} (the badge's)"
                    )
                into["severity"].add(part)
            else:
                if part not in PROTOCOLS:
                    hint = _did_you_mean(part, PROTOCOLS, _PROTOCOL_HINTS.get(part))
                    raise FilterError(
                        f"unknown protocol {part!r}{hint}; one of {', '.join(PROTOCOLS)} "
                        "(implicit TLS and STARTTLS share a name)"
                    )
                into["protocol"].add(part)
        return cls(
            text=" ".join(text.split()),
            hosts=tuple(hosts),
            protocols=frozenset(wanted["protocol"]),
            causes=frozenset(wanted["cause"]),
            verdicts=frozenset(wanted["verdict"]),
            severities=frozenset(wanted["severity"]),
            excluded_hosts=tuple(excluded_hosts),
            excluded_protocols=frozenset(unwanted["protocol"]),
            excluded_causes=frozenset(unwanted["cause"]),
            excluded_verdicts=frozenset(unwanted["verdict"]),
            excluded_severities=frozenset(unwanted["severity"]),
        )

    def predicate(self, show_all: bool) -> Callable[[Row], bool]:
        """A fast test for rows; judgements and hosts are judged once each and remembered."""
        judged: dict[int, bool] = {}
        hosts_ok: dict[tuple[str, str | None], bool] = {}
        protocols, excluded_protocols = self.protocols, self.excluded_protocols
        wanted_hosts, unwanted_hosts = self.hosts, self.excluded_hosts

        def judgement_ok(j: Judgement) -> bool:
            if not show_all and not j.failed:
                return False
            if self.verdicts and j.verdict not in self.verdicts:
                return False
            if j.verdict in self.excluded_verdicts:
                return False
            if self.causes and not self.causes.intersection(j.causes):
                return False
            if self.excluded_causes.intersection(j.causes):
                return False
            if self.severities or self.excluded_severities:
                severity = severity_of(j.verdict, j.causes)
                if self.severities and severity not in self.severities:
                    return False
                if severity in self.excluded_severities:
                    return False
            return True

        def host_ok(host: str, sni: str | None) -> bool:
            text = f"{host}\n{sni or ''}".lower()
            if wanted_hosts and not any(h in text for h in wanted_hosts):
                return False
            return not any(h in text for h in unwanted_hosts)

        def test(row: Row) -> bool:
            j = row.judgement
            ok = judged.get(id(j))
            if ok is None:
                ok = judged[id(j)] = judgement_ok(j)
            if not ok:
                return False
            if protocols and row.protocol not in protocols:
                return False
            if row.protocol in excluded_protocols:
                return False
            if wanted_hosts or unwanted_hosts:
                key = (row.host, row.sni)
                hit = hosts_ok.get(key)
                if hit is None:
                    hit = hosts_ok[key] = host_ok(row.host, row.sni)
                return hit
            return True

        return test


def _terms(text: str) -> Iterator[tuple[str, str, str, bool]]:
    """(word, field, value, excluded) for every value typed: ``host:a,!b`` gives two;
    ``!cause:x`` is ``cause:!x``; a bare word (or ``!word``) is a host."""
    for word in text.split():
        name, colon, value = word.partition(":")
        negate_all = colon and name.startswith("!") and name[1:].lower() in _FIELDS
        if negate_all:
            name = name[1:]
        elif not colon or word.startswith("!"):
            yield word, "host", word.lower().removeprefix("!"), word.startswith("!")
            continue
        what = _FIELDS.get(name.lower())
        if what is None:
            raise FilterError(
                f"unknown filter field {name!r}"
                f"{_did_you_mean(name.lower(), sorted(set(_FIELDS.values())))}; use "
                "host:, protocol:, cause:, verdict: or severity:"
            )
        values = [v for v in value.lower().split(",") if v]
        if not values:
            raise FilterError(f"{name}: needs a value, e.g. {name}:{_EXAMPLES[what]}")
        for part in values:
            negate = negate_all or part.startswith("!")
            yield word, what, part.removeprefix("!"), bool(negate)


_EXAMPLES = {
    "host": "example.com",
    "protocol": "imap",
    "cause": "expired",
    "verdict": "mismatch",
    "severity": "security",
}


def select(rows: Sequence[Row], test: Callable[[Row], bool], start: int = 0) -> list[int]:
    """Indices of the rows from ``start`` on that pass ``test``."""
    return [i for i in range(start, len(rows)) if test(rows[i])]


class Grouping:
    """Sessions grouped by (requested host, leaf certificate, primary cause), kept up to date."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str, str], Group] = {}

    def add(self, rows: Sequence[Row], indices: Iterable[int]) -> None:
        groups = self._groups
        for index in indices:
            row = rows[index]
            j = row.judgement
            key = (row.host, j.leaf_sha256, j.primary)
            found = groups.get(key)
            if found is None:
                found = groups[key] = Group(row.host, j, index)
            found.count += 1
            found.last = index
            found.judgement = j
            found.protocols.add(row.protocol)

    def group_of(self, row: Row) -> Group | None:
        """The group ``row`` belongs to, if it was added."""
        j = row.judgement
        return self._groups.get((row.host, j.leaf_sha256, j.primary))

    def sorted(self) -> list[Group]:
        """Most sessions first, then by host."""
        return sorted(self._groups.values(), key=lambda g: (-g.count, g.host, g.judgement.primary))

    def __len__(self) -> int:
        return len(self._groups)

"""Rows of the session list, the filter language, and the grouped view.

A row is small on purpose (no certificate, no prose): a million of them
must fit in memory. The full facts are read back from the recording when a
session is shown in detail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from certmatch.core.causes import CAUSES
from certmatch.core.diagnosis import VERDICTS
from certmatch.core.judge import Judgement
from certmatch.core.report import VERDICT_SYMBOLS


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
}
_SYMBOL_VERDICTS = {symbol: verdict for verdict, symbol in VERDICT_SYMBOLS.items()}

FILTER_HELP = (
    "words match the requested host or SNI; host:NAME protocol:imap cause:ID verdict:mismatch; "
    "commas mean 'or' (protocol:imap,pop3); a value starting with ! excludes (cause:!expired); "
    "empty clears the filter"
)


@dataclass(frozen=True)
class Filter:
    """Which sessions to show. Fields combine with AND, values within a field with OR."""

    text: str = ""
    hosts: tuple[str, ...] = ()
    protocols: frozenset[str] = field(default_factory=frozenset)
    causes: frozenset[str] = field(default_factory=frozenset)
    verdicts: frozenset[str] = field(default_factory=frozenset)
    excluded_causes: frozenset[str] = field(default_factory=frozenset)

    @property
    def empty(self) -> bool:
        return not (
            self.hosts or self.protocols or self.causes or self.verdicts or self.excluded_causes
        )

    @classmethod
    def parse(cls, text: str) -> Filter:
        """Parse ``host:x protocol:imap cause:id verdict:mismatch words``; FilterError if wrong."""
        hosts: list[str] = []
        values: dict[str, set[str]] = {
            "protocol": set(),
            "cause": set(),
            "verdict": set(),
            "!cause": set(),
        }
        for word in text.split():
            name, colon, value = word.partition(":")
            if not colon:
                hosts.append(word.lower())
                continue
            what = _FIELDS.get(name.lower())
            if what is None:
                raise FilterError(
                    f"unknown filter field {name!r}; use host:, protocol:, cause: or verdict:"
                )
            for part in filter(None, value.lower().split(",")):
                if what == "host":
                    hosts.append(part)
                elif what == "cause":
                    negate = part.startswith("!")
                    cause = part.lstrip("!")
                    if cause not in CAUSES:
                        near = [c for c in CAUSES if cause in c]
                        hint = f" (did you mean {', '.join(near)}?)" if near else ""
                        raise FilterError(f"unknown cause id {cause!r}{hint}; see ? for the list")
                    values["!cause" if negate else "cause"].add(cause)
                elif what == "verdict":
                    verdict = _SYMBOL_VERDICTS.get(part, part)
                    if verdict not in VERDICTS:
                        raise FilterError(f"unknown verdict {part!r}; one of {', '.join(VERDICTS)}")
                    values["verdict"].add(verdict)
                else:
                    values["protocol"].add(part)
        return cls(
            text=" ".join(text.split()),
            hosts=tuple(hosts),
            protocols=frozenset(values["protocol"]),
            causes=frozenset(values["cause"]),
            verdicts=frozenset(values["verdict"]),
            excluded_causes=frozenset(values["!cause"]),
        )

    def predicate(self, show_all: bool) -> Callable[[Row], bool]:
        """A fast test for rows; judgements and hosts are judged once each and remembered."""
        judged: dict[int, bool] = {}
        hosts_ok: dict[tuple[str, str | None], bool] = {}
        protocols = self.protocols
        wanted_hosts = self.hosts

        def judgement_ok(j: Judgement) -> bool:
            if not show_all and not j.failed:
                return False
            if self.verdicts and j.verdict not in self.verdicts:
                return False
            if self.causes and not self.causes.intersection(j.causes):
                return False
            return not self.excluded_causes.intersection(j.causes)

        def host_ok(host: str, sni: str | None) -> bool:
            text = f"{host}\n{sni or ''}".lower()
            return any(h in text for h in wanted_hosts)

        def test(row: Row) -> bool:
            j = row.judgement
            ok = judged.get(id(j))
            if ok is None:
                ok = judged[id(j)] = judgement_ok(j)
            if not ok:
                return False
            if protocols and row.protocol not in protocols:
                return False
            if wanted_hosts:
                key = (row.host, row.sni)
                hit = hosts_ok.get(key)
                if hit is None:
                    hit = hosts_ok[key] = host_ok(row.host, row.sni)
                return hit
            return True

        return test


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

    def sorted(self) -> list[Group]:
        """Most sessions first, then by host."""
        return sorted(self._groups.values(), key=lambda g: (-g.count, g.host, g.judgement.primary))

    def __len__(self) -> int:
        return len(self._groups)

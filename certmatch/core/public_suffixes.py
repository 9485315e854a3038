"""The ICANN section of the Public Suffix List, as three sets of rules.

A wildcard certificate for a public suffix (``*.co.uk``) names every domain under it, so the
identity rules need to know which names are public suffixes, and DNS discovery needs a name's
registrable domain. The list's algorithm (https://publicsuffix.org/list/, "Formal Algorithm")
is a longest-suffix match over normal rules, wildcard rules (``*.ck``) and exception rules
(``!www.ck``), with the default rule ``*`` when nothing else matches.

Only the ICANN section counts, as in Chrome: private suffixes such as blogspot.com
legitimately carry ``*.blogspot.com`` certificates. Rules are kept as A-labels; the few
hundred internationalised rules are converted only when a name with an A-label is looked up,
because converting them costs more than reading the whole list (they matter to no other name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

_ICANN_END = "// ===END ICANN DOMAINS==="


class PublicSuffixes:
    """Longest-match look-ups in the ICANN rules of one Public Suffix List text."""

    def __init__(self, rules: Iterable[str], to_ascii: Callable[[str], str | None]) -> None:
        self._normal: set[str] = set()
        self._wildcard: set[str] = set()  # "ck" for the rule "*.ck"
        self._exception: set[str] = set()  # "www.ck" for the rule "!www.ck"
        self._unconverted: list[str] = []
        self._to_ascii = to_ascii
        for rule in rules:
            if rule.isascii():
                self._add(rule.lower())
            else:
                self._unconverted.append(rule)

    @classmethod
    def from_text(cls, text: str, to_ascii: Callable[[str], str | None]) -> PublicSuffixes:
        """The rules of the list's ICANN section (everything before its END marker)."""
        icann = text.split(_ICANN_END, 1)[0]
        rules = (
            line.split()[0]
            for line in icann.splitlines()
            if line.strip() and not line.lstrip().startswith("//")
        )
        return cls(rules, to_ascii)

    def _add(self, rule: str) -> None:
        if rule.startswith("!"):
            self._exception.add(rule[1:])
        elif rule.startswith("*."):
            self._wildcard.add(rule[2:])
        else:
            self._normal.add(rule)

    def _convert_idn_rules(self) -> None:
        for rule in self._unconverted:
            marker = "!" if rule.startswith("!") else "*." if rule.startswith("*.") else ""
            if converted := self._to_ascii(rule[len(marker) :]):
                self._add(marker + converted)
        self._unconverted = []

    def suffix_length(self, labels: list[str]) -> int:
        """How many of the last ``labels`` (lowercase A-labels) form the public suffix."""
        if self._unconverted and any(label.startswith("xn--") for label in labels):
            self._convert_idn_rules()
        count = len(labels)
        for start in range(count):  # an exception rule beats every other rule
            if ".".join(labels[start:]) in self._exception:
                return count - start - 1
        for start in range(count):  # longest first
            suffix = ".".join(labels[start:])
            if suffix in self._normal:
                return count - start
            if start + 1 < count and ".".join(labels[start + 1 :]) in self._wildcard:
                return count - start
        return 1  # the default rule "*"

    def is_public_suffix(self, domain: str) -> bool:
        """True when ``domain`` (lowercase A-labels) is a public suffix, or the base of a
        wildcard rule: under ``*.kobe.jp`` every name one label below ``kobe.jp`` is a public
        suffix, so ``*.kobe.jp`` as a certificate name would cover only public suffixes (Chrome
        refuses it too)."""
        labels = domain.split(".")
        if self.suffix_length(labels) == len(labels):
            return True
        if self._unconverted and "xn--" in domain:
            self._convert_idn_rules()
        return domain in self._wildcard

    def registrable_domain(self, domain: str) -> str:
        """The public suffix of ``domain`` plus one label; ``domain`` itself when it is a
        public suffix (as publicsuffix2's ``get_sld`` answers)."""
        labels = domain.split(".")
        length = self.suffix_length(labels)
        return ".".join(labels[-length - 1 :]) if length < len(labels) else domain
